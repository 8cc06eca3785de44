"""``meshd engine add-docker | sign | trust | allow | policy``.

Registered by :func:`meshd.cli.commands._register_extensions`.  ``meshd.cli`` already
owns the ``engine`` command group (``add``, ``list``); these actions join that
group, so users find every engine command under ``meshd engine``.  argparse
has no public way to reach a group's sub-parsers once built, so
:func:`register` looks up the group's ``_SubParsersAction`` in its
``_actions`` (a stable private attribute since Python 3.2) and falls back to
a top-level ``engines`` group if that ever fails.

Like the rest of the CLI, this module may read the environment: ``add-docker``
reads ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``) to reach the
Docker engine that holds the image to upload.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any, TextIO

import httpx

from ..errors import ClientError, NotRunning
from . import commands as cli

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def _engine_group(sub: Any) -> Any:
    group = sub.choices.get("engine")
    if group is not None:
        for action in group._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
    return sub.add_parser("engines", help="engine publishing and trust").add_subparsers(
        dest="engine_command", required=True, metavar="ACTION")


def register(sub: Any, common: argparse.ArgumentParser, client: argparse.ArgumentParser) -> None:
    """Add the engine actions to ``meshd engine``."""
    engine = _engine_group(sub)

    p = engine.add_parser("add-docker", parents=[client],
                          help="upload a local Docker image as a content-addressed engine")
    p.add_argument("image", metavar="IMAGE", help="image name:tag or id, in the Docker engine at DOCKER_HOST")
    p.add_argument("--name", help="engine name (default: the image reference)")
    p.add_argument("--cmd", nargs="+", metavar="ARG", help="command run in the container (default: the image's CMD)")
    p.add_argument("--protocol", choices=["json", "jsonl"], default="json",
                   help="json: one document per run (cold); jsonl: one per line, can run warm (default json)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-task timeout (default 60)")
    p.add_argument("--memory-mb", type=int, default=1024, help="container memory limit in MiB (default 1024)")
    p.add_argument("--no-sign", action="store_true",
                   help="do not sign with this node's key (it then runs only once trusted or allowed)")
    p.add_argument("--docker-host", help="Docker engine URL (default: $DOCKER_HOST, else the local socket)")
    p.set_defaults(func=cmd_add_docker)

    p = engine.add_parser("sign", parents=[client], help="sign an engine manifest with this node's key")
    p.add_argument("cid", metavar="CID")
    p.set_defaults(func=cmd_sign)

    p = engine.add_parser("trust", parents=[client],
                          help="trust engines signed by a publisher (hex Ed25519 key or peer id)")
    p.add_argument("publisher", metavar="PUBKEY_HEX|PEER_ID")
    p.set_defaults(func=cmd_trust)

    p = engine.add_parser("allow", parents=[client], help="allow one engine CID whoever signed it")
    p.add_argument("cid", metavar="CID")
    p.set_defaults(func=cmd_allow)

    p = engine.add_parser("policy", parents=[client], help="show trusted publishers, allowed engines, Docker")
    p.set_defaults(func=cmd_policy)


# ----------------------------------------------------------------- commands


def _docker_stream(args: argparse.Namespace) -> tuple[Iterator[bytes], str, Any]:
    """``docker save`` of ``args.image`` as a chunk iterator, the tag, and the client to close."""
    import docker
    import docker.errors

    host = args.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    try:
        dclient = docker.DockerClient(base_url=host, version="auto", timeout=600)
    except docker.errors.DockerException as exc:
        raise ClientError(f"cannot reach the Docker engine at {host}: {exc}") from None
    try:
        image = dclient.images.get(args.image)
    except docker.errors.ImageNotFound:
        dclient.close()
        raise ClientError(f"image {args.image!r} is not in the Docker engine at {host}") from None
    except docker.errors.DockerException as exc:
        dclient.close()
        raise ClientError(f"Docker engine at {host} failed: {exc}") from None
    tag = args.image if args.image in image.tags else (image.tags[0] if image.tags else "")
    # named=tag keeps the name in the tarball, so `docker load` on a peer restores it.
    return image.save(named=tag or False), tag, dclient


def _answer(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success:
        return data
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        raise ClientError(f"{error.get('code', 'error')}: {error.get('message', '')}")
    raise ClientError(f"HTTP {response.status_code}: {response.text[:200]}")


def cmd_add_docker(args: argparse.Namespace, out: TextIO) -> int:
    chunks, tag, dclient = _docker_stream(args)
    params: list[tuple[str, str]] = [("name", args.name or tag or args.image), ("tag", tag),
                                     ("protocol", args.protocol), ("timeout_s", str(args.timeout)),
                                     ("memory_mb", str(args.memory_mb)), ("sign", "false" if args.no_sign else "true")]
    params += [("cmd", c) for c in args.cmd or ()]
    try:
        with cli._closing(cli._client(args)) as api:
            # Client speaks JSON only; the raw tarball goes through its
            # connection pool (auth header included), streamed chunk by chunk.
            try:
                response = api._http.post("/v1/engines/docker", params=params, content=chunks,
                                          headers={"content-type": "application/x-tar"},
                                          timeout=httpx.Timeout(args.timeout_http, read=None, write=None))
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise NotRunning(f"meshd is not running at {api.base_url} (start it with `meshd run`)") from None
            except httpx.TransportError as exc:
                raise ClientError(f"upload to {api.base_url} failed: {exc.__class__.__name__}: {exc}") from None
            answer = _answer(response)
    finally:
        dclient.close()
    cli._emit(args, answer, lambda a: f"engine {a['name']}: {a['cid']}\nimage {a['image_id']} "
                                      f"({a['bytes']} bytes, tar {a['image_tar']})", out)
    return 0


def cmd_sign(args: argparse.Namespace, out: TextIO) -> int:
    with cli._closing(cli._client(args)) as api:
        answer = api.sign_engine(args.cid)
    cli._emit(args, answer, lambda a: f"signed {a['cid']} as {a['publisher']}\nsignature {a['signature']}", out)
    return 0


def _policy_edit(args: argparse.Namespace, out: TextIO, path: str, body: dict[str, str], what: str) -> int:
    try:
        with cli._closing(cli._client(args)) as api:
            answer = api.request("POST", path, body)
    except NotRunning:
        # No daemon: edit the home's config; the next `meshd run` applies it.
        answer = _edit_config_offline(args, path, next(iter(body.values())))
    cli._emit(args, answer, lambda a: f"{what} {a.get('publisher') or a.get('cid')}"
                                      + ("" if a.get("live") else " (applies when the daemon starts)"), out)
    return 0


def _edit_config_offline(args: argparse.Namespace, path: str, value: str) -> dict[str, Any]:
    import dataclasses

    from ..api.engine_admin import publisher_key_untrusted
    from ..config import write_config
    from ..errors import ApiError

    home = cli._resolve_home(args)
    home.require_initialised()
    config = home.load_config()
    try:
        if path.endswith("/trust"):
            key = publisher_key_untrusted(value).hex()
            engines = dataclasses.replace(config.engines, trusted_publishers=tuple(
                dict.fromkeys([*config.engines.trusted_publishers, key])))
            answer = {"publisher": key, "live": False}
        else:
            engines = dataclasses.replace(config.engines, allow=tuple(dict.fromkeys([*config.engines.allow, value])))
            answer = {"cid": engines.allow[-1], "live": False}
    except ApiError as exc:
        raise ClientError(exc.message) from None
    write_config(home.path, dataclasses.replace(config, engines=engines))
    return answer


def cmd_trust(args: argparse.Namespace, out: TextIO) -> int:
    return _policy_edit(args, out, "/v1/engines/trust", {"publisher": args.publisher}, "trusted publisher")


def cmd_allow(args: argparse.Namespace, out: TextIO) -> int:
    return _policy_edit(args, out, "/v1/engines/allow", {"cid": args.cid}, "allowed engine")


def cmd_policy(args: argparse.Namespace, out: TextIO) -> int:
    with cli._closing(cli._client(args)) as api:
        answer = api.engine_policy()

    def render(a: dict[str, Any]) -> str:
        lines = [f"this node signs as {a['publisher']}",
                 f"docker: {'available' if a['docker']['available'] else 'unavailable'}"]
        lines += [f"trusted: {k}" for k in a["trusted_publishers"]]
        lines += [f"allowed: {c}" for c in a["allow"]]
        return "\n".join(lines)

    cli._emit(args, answer, render, out)
    return 0
