"""The composition root builds bottom-up: nothing is wired after construction.

``meshd.daemon.serve_node`` constructs each component with what it needs
(the transport and the mesh before the node, the Docker backend before the
engine host, the API server before the node that reports its URL) and never
assigns to a component's attribute afterwards (issue 12, composition).
"""

from __future__ import annotations

import ast
import inspect


def test_serve_node_assigns_no_attribute_of_a_component() -> None:
    from meshd import daemon

    tree = ast.parse(inspect.getsource(daemon))
    wired = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        wired += [ast.unparse(t) for t in targets if isinstance(t, ast.Attribute)]
    assert wired == []


def test_the_node_is_built_with_its_mesh_and_address_providers(tmp_path) -> None:
    from types import SimpleNamespace

    from lattice.blockstore import MemoryBlockStore
    from lattice.signing import Signer, peer_id_of
    from meshd.config import VerifyConfig
    from meshd.node import Node
    from meshd.store.heads import HeadsStore
    from meshd.store.objects import ObjectHost

    seed = b"\x66" * 32
    signer = Signer.from_seed(seed)
    objects = ObjectHost(MemoryBlockStore(), HeadsStore.open(tmp_path / "heads.db"), signer)
    config = SimpleNamespace(node=SimpleNamespace(mesh="bottom-up", labels=("x",), name="n", roles=()),
                             verify=VerifyConfig())
    url: list[str] = []
    mesh = object()
    node = Node(objects=objects, peer_id=peer_id_of(signer.public), identity_seed=seed, config=config,
                mesh=mesh, api_url=lambda: url[0] if url else None, p2p_addrs=lambda: ["/ip4/127.0.0.1/tcp/1"])
    assert node.mesh is mesh and node.inventory["labels"] == ["x"]
    assert node.api_url is None  # not listening yet: the provider is read when asked
    url.append("http://127.0.0.1:7600")
    assert node.api_url == "http://127.0.0.1:7600"
    assert node.p2p_addrs == ["/ip4/127.0.0.1/tcp/1"]


def test_a_sealed_transport_keeps_what_it_refused_for_the_mesh_to_drain() -> None:
    from meshd.p2p.mesh import Refusing
    from meshd.p2p.secret import SealedTransport

    wire = SealedTransport(object(), "a secret")
    assert isinstance(wire, Refusing)
    wire.on_reject("bad_mesh_secret")
    wire.on_reject("bad_mesh_secret")
    assert wire.take_rejections() == ["bad_mesh_secret", "bad_mesh_secret"]
    assert wire.take_rejections() == []
