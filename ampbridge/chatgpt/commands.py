"""The ChatGPT commands of the ``ampbridge`` CLI: ``login chatgpt``, ``logout chatgpt`` and
``accounts``. ``register`` adds them to the CLI's subparsers; the CLI passes the store folder.

``accounts`` shows each account, its plan, token expiry, cooldown and whether it needs a new
login, and never a token.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

import anyio
import httpx

from .codex_file import CodexFileError, default_codex_auth_path
from .credentials import Tokens
from .login_flows import (
    DeviceFlowUnavailable,
    login_with_browser,
    login_with_device_code,
    login_with_pasted_redirect,
)
from .oauth import DEFAULT_AUTH_URL, DEFAULT_CALLBACK_PORT, LoginError
from .store import AccountRecord, CredentialStore, StoreError

CLI_TIMEOUT = httpx.Timeout(30.0)


def register(subparsers: Any, *, data_dir_default: Path) -> None:
    """Add ``login chatgpt``, ``logout chatgpt`` and ``accounts`` to an argparse subparsers object."""
    login = subparsers.add_parser("login", help="log in to a subscription provider")
    login_providers = login.add_subparsers(dest="provider", required=True)
    chatgpt = login_providers.add_parser("chatgpt", help="log in with a ChatGPT Plus/Pro account")
    chatgpt.add_argument(
        "--headless", action="store_true", help="no browser here: a device code, or paste the redirect URL"
    )
    chatgpt.add_argument(
        "--import",
        dest="import_path",
        nargs="?",
        const="",
        metavar="PATH",
        help="use the Codex CLI's login (default: $CODEX_HOME/auth.json or ~/.codex/auth.json); "
        "it stays in that file and both tools keep working",
    )
    chatgpt.add_argument(
        "--port", type=int, default=DEFAULT_CALLBACK_PORT, help="login callback port (default: 1455)"
    )
    chatgpt.add_argument("--auth-url", default=DEFAULT_AUTH_URL, help="the OAuth server (default: OpenAI's)")
    chatgpt.set_defaults(run=cmd_login_chatgpt)

    logout = subparsers.add_parser("logout", help="forget a subscription login")
    logout_providers = logout.add_subparsers(dest="provider", required=True)
    chatgpt_out = logout_providers.add_parser("chatgpt", help="forget a ChatGPT account")
    chatgpt_out.add_argument("account", nargs="?", help="name, email or account id (needed if several)")
    chatgpt_out.set_defaults(run=cmd_logout_chatgpt)

    accounts = subparsers.add_parser("accounts", help="list subscription logins (never their tokens)")
    accounts.set_defaults(run=cmd_accounts)

    for command in (chatgpt, chatgpt_out, accounts):
        command.add_argument(
            "--data-dir",
            type=Path,
            default=data_dir_default,
            help=f"where ChatGPT logins are kept (default: {data_dir_default})",
        )


def cmd_login_chatgpt(args: argparse.Namespace) -> int:
    store = CredentialStore(args.data_dir)
    try:
        if args.import_path is not None:
            path = (
                Path(args.import_path)
                if args.import_path
                else default_codex_auth_path(os.environ, Path.home())
            )
            record = store.save_import(path)
            print(f"imported the Codex CLI's login as {_describe(record)}")
            print(f"  its tokens stay in {record.codex_file}; ampbridge reads and refreshes them there")
            return 0
        tokens = anyio.run(_login, args)
    except (LoginError, CodexFileError, StoreError) as error:
        print(f"ampbridge: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ampbridge: login cancelled", file=sys.stderr)
        return 130
    record = store.save_login(tokens)
    print(f"logged in {_describe(record)}; saved in {record.path}")
    return 0


async def _login(args: argparse.Namespace) -> Tokens:
    async with httpx.AsyncClient(timeout=CLI_TIMEOUT) as client:
        if not args.headless:

            async def open_url(url: str) -> None:
                print(f"Opening a browser to log in. If none opens, visit:\n\n  {url}\n", flush=True)
                webbrowser.open(url)

            return await login_with_browser(client, auth_url=args.auth_url, open_url=open_url, port=args.port)
        try:
            return await login_with_device_code(client, auth_url=args.auth_url, announce=_print)
        except DeviceFlowUnavailable:
            return await login_with_pasted_redirect(
                client, auth_url=args.auth_url, announce=_print, read_line=_read_line, port=args.port
            )


def _print(text: str) -> None:
    print(text, flush=True)


async def _read_line() -> str:
    print("Redirected URL: ", end="", flush=True)
    line: str = await anyio.to_thread.run_sync(sys.stdin.readline)
    if not line:
        raise LoginError("no URL was pasted")
    return line


def cmd_logout_chatgpt(args: argparse.Namespace) -> int:
    store = CredentialStore(args.data_dir)
    records = store.records()
    if args.account:
        record = store.find(args.account)
        if record is None:
            print(f"ampbridge: no ChatGPT account {args.account!r}", file=sys.stderr)
            return 1
    elif len(records) == 1:
        record = records[0]
    else:
        names = ", ".join(r.name for r in records) or "none"
        print(f"ampbridge: name the account to log out (accounts: {names})", file=sys.stderr)
        return 1
    store.remove(record)
    print(f"logged out {record.name}")
    if record.codex_file is not None:
        print(f"  the Codex CLI's own login in {record.codex_file} is left as it is")
    return 0


def cmd_accounts(args: argparse.Namespace) -> int:
    store = CredentialStore(args.data_dir)
    records = store.records()
    if not records:
        print(f"no ChatGPT accounts (log in with: ampbridge login chatgpt); folder: {store.directory}")
        return 0
    print(f"ChatGPT accounts in {store.directory}:")
    for record in records:
        print("  " + account_line(store, record, now=time.time()))
    return 0


def account_line(store: CredentialStore, record: AccountRecord, *, now: float) -> str:
    """One account for ``ampbridge accounts``: name, plan, source, expiry, state."""
    source = f"imported from {record.codex_file}" if record.codex_file else "ampbridge login"
    try:
        expiry = store.load_tokens(record).expiry()
        expires = f"token expires {_when(expiry, now)}" if expiry else "token expiry unknown"
    except (OSError, ValueError, StoreError, CodexFileError):
        expires = "login unreadable"
    if record.needs_login:
        state = f"NEEDS LOGIN: {record.needs_login}"
    elif record.cooldown_until and record.cooldown_until > now:
        state = f"cooling down until {_when(record.cooldown_until, now)}"
    else:
        state = "ready"
    return f"{_describe(record)}  [{source}]  {expires}  {state}"


def _describe(record: AccountRecord) -> str:
    return f"{record.name} (plan {record.plan or 'unknown'})"


def _when(moment: float, now: float) -> str:
    stamp = dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    seconds = moment - now
    if seconds < 0:
        return f"{stamp} (past)"
    hours = seconds / 3600
    return f"{stamp} (in {hours / 24:.1f} days)" if hours >= 48 else f"{stamp} (in {hours:.1f} h)"
