"""Push the built book (book/_build/html) to the gh-pages branch with ghp-import, as Jupyter Book's documentation
recommends (`ghp-import -n -p -f _build/html`).

Usage: python scripts/publish.py [--html DIR] [--dry-run] [--remote origin] [--branch gh-pages]

--dry-run does everything but the push, in a throwaway clone of this repository: ghp-import commits the pages to
the clone's branch, the commit is summarised, and the clone is deleted, so neither this checkout's branches nor
the remote change.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def check_html(html: Path) -> None:
    if not (html / "index.html").is_file():
        sys.exit(f"{html} holds no built book (no index.html): run `make book` first")


def ghp_import(html: Path, repo: Path, branch: str, message: str, push: bool, remote: str) -> None:
    cmd = [str(Path(sys.executable).with_name("ghp-import")), "-n", "-f", "-b", branch, "-m", message]
    cmd += ["-p", "-r", remote] if push else []
    subprocess.run([*cmd, str(html.resolve())], cwd=repo, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--html", type=Path, default=REPO / "book" / "_build" / "html")
    p.add_argument("--dry-run", action="store_true", help="commit to a throwaway clone's branch; push nothing")
    p.add_argument("--remote", default="origin")
    p.add_argument("--branch", default="gh-pages")
    args = p.parse_args(argv)
    check_html(args.html)
    sha = _git("rev-parse", "--short", "HEAD", cwd=REPO)
    message = f"Book built from {sha}"
    if not args.dry_run:
        ghp_import(args.html, REPO, args.branch, message, push=True, remote=args.remote)
        print(f"Pushed {args.html} to {args.remote}/{args.branch} ({message})")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", "--shared", str(REPO), str(clone)], check=True)
        ghp_import(args.html, clone, args.branch, message, push=False, remote=args.remote)
        files = _git("ls-tree", "-r", "--name-only", args.branch, cwd=clone).splitlines()
        print(f"Dry run: {len(files)} files would be pushed to {args.remote}/{args.branch} "
              f"(commit: {_git('log', '-1', '--format=%s', args.branch, cwd=clone)!r}); nothing was pushed")
        print("\n".join(files[:10]) + ("\n..." if len(files) > 10 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
