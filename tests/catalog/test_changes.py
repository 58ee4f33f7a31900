"""Every malformed or impossible change is refused before anything changes, naming the field as the HTTP API
spells it; changes survive their JSON form (the change log's) unchanged."""
import pytest

from grserve.catalog import changes
from grserve.catalog.live import LiveCatalog
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.errors import InvalidRequest


@pytest.fixture
def catalog(tiny_bundle):  # 60 items i0..i59, codebook of 5
    return LiveCatalog(CatalogSnapshot.build(0, tiny_bundle.table))


SID = [1, 2, 3]


@pytest.mark.parametrize("call,param", [
    (lambda c: c.add_items([]), "items"),
    (lambda c: c.add_items("x"), "items"),
    (lambda c: c.add_items(["x"]), "items.0"),
    (lambda c: c.add_items([{"semantic_id": SID}]), "items.0.item_id"),
    (lambda c: c.add_items([{"item_id": True, "semantic_id": SID}]), "items.0.item_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": SID}, {"item_id": "b"}]), "items.1.semantic_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": SID, "text": "t"}]), "items.0.semantic_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": [1, 2]}]), "items.0.semantic_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": [1, 2, 5]}]), "items.0.semantic_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": [-1, 2, 3]}]), "items.0.semantic_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": [1, 2, "3"]}]), "items.0.semantic_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": SID, "colour": "red"}]), "items.0.colour"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": SID, "title": 7}]), "items.0.title"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": SID}, {"item_id": "a", "semantic_id": SID}]),
     "items.1.item_id"),
    (lambda c: c.add_items([{"item_id": "a", "semantic_id": SID}, {"item_id": "b", "text": "red shoes"}]),
     "items.1.text"),  # the tiny model was trained without codebooks
    (lambda c: c.add_items([{"item_id": "a", "text": "  "}]), "items.0.text"),
    (lambda c: c.remove_items([]), "item_ids"),
    (lambda c: c.remove_items(["i1", "nope"]), "item_ids.1"),
    (lambda c: c.remove_items(["i1", "i1"]), "item_ids.1"),
    (lambda c: c.remove_items([1.5]), "item_ids.0"),
    (lambda c: c.set_availability(), "disable"),
    (lambda c: c.set_availability(disable=["nope"]), "disable.0"),
    (lambda c: c.set_availability(enable=["i2", "nope"]), "enable.1"),
    (lambda c: c.set_availability(disable=["i2"], enable=["i3", "i2"]), "enable.1"),
    (lambda c: c.rollback(), "version"),
    (lambda c: c.rollback(0), "version"),
])
def test_bad_changes_name_the_field_and_change_nothing(catalog, call, param):
    with pytest.raises(InvalidRequest) as e:
        call(catalog)
    assert e.value.param == param and str(e.value).startswith(param + ":")
    assert catalog.version == 0 and catalog.current is catalog.base


def test_rollback_only_to_an_earlier_version(catalog):
    catalog.set_availability(disable=["i1"])
    for bad in (1, 2, -1, "0", True):
        with pytest.raises(InvalidRequest, match="version"):
            catalog.rollback(bad)
    assert catalog.rollback().version == 2


def test_integer_ids_are_the_same_items_as_their_strings(catalog):
    catalog.add_items([{"item_id": 7, "semantic_id": SID}])
    assert catalog.current.table.row_of("7") == 60
    catalog.set_availability(disable=[7])
    assert catalog.current.disabled == {60}


@pytest.mark.parametrize("change", [
    changes.AddItems((changes.NewItem("a", (1, 2, 3), "A"), changes.NewItem("b", (0, 0, 4)))),
    changes.RemoveItems(("i1", "i2")),
    changes.SetAvailability(("i3",), ("i4", "i5")),
    changes.Rollback(3),
])
def test_json_round_trip(change):
    assert changes.from_json(changes.to_json(change)) == change


@pytest.mark.parametrize("entry", [{"kind": "add"}, {"kind": "add", "items": [{"item_id": "a"}]},
                                   {"kind": "explode"}, {"kind": "rollback", "to_version": "x"}, {}])
def test_malformed_log_entries_are_value_errors(entry):
    with pytest.raises(ValueError):
        changes.from_json(entry)
