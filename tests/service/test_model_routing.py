"""Which model a request through the router is for: the one it names, the one its split chose for its user
(written into the body), the default every live GR instance shares; a batch goes to one model."""
from __future__ import annotations

import json

from grserve.service.model_routing import default_gr, named_model, serves
from grserve.service.registry import InstanceInfo, ModelInfo
from grserve.service.splits import parse_split

SPLITS = {"home": parse_split("home=gr-a:50,gr-b:50")}


def inst(name: str, *models: tuple[str, str]) -> InstanceInfo:
    return InstanceInfo(instance_id=name, address=f"http://{name}", model=models[0][0],
                        models=[ModelInfo(m, kind) for m, kind in models])


def test_a_split_writes_its_choice_for_the_user_into_the_body():
    body = {"model": "home", "user": "u1", "history": []}
    assert named_model(body, "/v1/recommend", {}, SPLITS) == (SPLITS["home"].choose("u1"), "home")
    assert body["model"] == SPLITS["home"].choose("u1")
    by_session = {"model": "home"}
    named_model(by_session, "/v1/recommend", {"x-session-id": "u1"}, SPLITS)  # the header when no user
    assert by_session["model"] == body["model"]
    assert named_model({"model": "gr-a"}, "/v1/recommend", {}, SPLITS) == ("gr-a", None)
    assert named_model({"model": 7}, "/v1/recommend", {}, SPLITS) == (None, None)  # the instance refuses it


def test_a_batch_goes_to_one_model():
    users = [f"u{n}" for n in range(40)]
    sides = {u: SPLITS["home"].choose(u) for u in users}
    a_side = [u for u in users if sides[u] == "gr-a"][:3]
    body = {"requests": [{"model": "home", "user": u} for u in a_side]}
    assert named_model(body, "/v1/recommend/batch", {}, SPLITS) == ("gr-a", "home")
    mixed = {"requests": [{"model": "home", "user": u} for u in users[:10]]}
    refused = named_model(mixed, "/v1/recommend/batch", {}, SPLITS)
    assert refused.status_code == 400 and json.loads(refused.body)["error"]["param"] == "requests"
    assert named_model({"requests": [{"model": "gr-a"}, {}]}, "/v1/recommend/batch", {}, SPLITS).status_code == 400
    assert named_model({"requests": [{}, {}]}, "/v1/recommend/batch", {}, SPLITS) == (None, None)


def test_the_default_every_live_gr_instance_shares():
    a, b = inst("a", ("shop", "gr"), ("news", "gr")), inst("b", ("shop", "gr"), ("chat", "llm"))
    assert default_gr([a, b]) == "shop"
    c = inst("c", ("news", "gr"))
    refused = default_gr([a, c])
    assert refused.status_code == 400 and "['news', 'shop']" in json.loads(refused.body)["error"]["message"]
    assert default_gr([inst("d", ("chat", "llm"))]).status_code == 503
    assert serves(a, "news", "gr") and not serves(a, "news", "llm") and serves(b, None, "llm")
    assert not serves(b, "news", None)
    old = InstanceInfo(instance_id="o", address="http://o", model="shop", kinds=["gr", "llm"])  # lists no models
    assert old.served() == [ModelInfo("shop", "gr")] and default_gr([old, b]) == "shop"
