"""Report 8: watching an indirect-object-identification circuit form in our own small models."""
