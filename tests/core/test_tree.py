"""Pytrees: flatten, unflatten, map and key paths over nested containers."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import attrs
import pytest

import tapegrad as tg
from tapegrad import tree


class Point(NamedTuple):
    x: Any
    y: Any


@attrs.frozen
class Layer:
    weight: Any
    bias: Any


@attrs.frozen
class Aliased:
    _private: Any  # attrs' __init__ takes it as `private`


class Box:
    """A plain class, made a node with `tree.register`."""

    def __init__(self, content: Any) -> None:
        self.content = content


tree.register(Box, lambda b: ([b.content], None), lambda aux, children: Box(children[0]))


def test_flatten_orders_dict_keys_and_keeps_none_as_a_node() -> None:
    leaves, treedef = tree.flatten({"b": [1, 2], "a": (3, None)})
    assert leaves == [3, 1, 2]
    assert tree.unflatten(treedef, [10, 20, 30]) == {"a": (10, None), "b": [20, 30]}
    assert repr(treedef) == "dict(tuple(*, NoneType()), list(*, *))"


def test_named_tuples_attrs_classes_and_registered_classes_round_trip() -> None:
    value = {"p": Point(1, 2), "layer": Layer(weight=3, bias=None), "box": Box(4), "a": Aliased(5)}
    leaves, treedef = tree.flatten(value)
    assert leaves == [5, 4, 3, 1, 2]
    rebuilt = tree.unflatten(treedef, [x * 10 for x in leaves])
    assert rebuilt["p"] == Point(10, 20) and type(rebuilt["p"]) is Point
    assert rebuilt["layer"] == Layer(30, None)
    assert isinstance(rebuilt["box"], Box) and rebuilt["box"].content == 40
    assert rebuilt["a"] == Aliased(50)


def test_tensors_are_leaves() -> None:
    x = tg.tensor([1.0, 2.0])
    assert tree.leaves([x, {"k": x}]) == [x, x]


def test_paths_name_each_leaf() -> None:
    value = {"layers": [Layer(1, 2), Layer(3, None)], "p": Point(4, 5), "box": Box(6)}
    paths, leaves, _ = tree.flatten_with_paths(value)
    assert dict(zip(paths, leaves)) == {
        "['box'][0]": 6,
        "['layers'][0].weight": 1,
        "['layers'][0].bias": 2,
        "['layers'][1].weight": 3,
        "['p'].x": 4,
        "['p'].y": 5,
    }


def test_map_over_several_trees() -> None:
    result = tree.map(lambda a, b: a + b, {"x": 1, "y": [2, None]}, {"x": 10, "y": [20, None]})
    assert result == {"x": 11, "y": [22, None]}


def test_map_keeps_attrs_classes() -> None:
    doubled = tree.map(lambda v: v * 2, Layer(weight=1, bias=2))
    assert doubled == Layer(2, 4)


def test_map_over_trees_of_different_structure_says_where() -> None:
    message = "tree.map: tree 1 does not match the structure of the first tree at ['y']: list(*) vs list(*, *)"
    with pytest.raises(ValueError, match=re.escape(message)):
        tree.map(lambda a, b: a, {"x": 1, "y": [2]}, {"x": 1, "y": [2, 3]})


def test_structure_compares_with_equality() -> None:
    assert tree.structure({"a": [1, 2]}) == tree.structure({"a": [3, 4]})
    assert tree.structure({"a": [1, 2]}) != tree.structure({"a": (3, 4)})
    assert tree.structure(Layer(1, 2)) != tree.structure(Layer(1, None))


def test_unflatten_with_the_wrong_number_of_leaves() -> None:
    treedef = tree.structure([1, 2])
    with pytest.raises(ValueError, match=re.escape("tree.unflatten: the structure has 2 leaves, got 3")):
        tree.unflatten(treedef, [1, 2, 3])


def test_register_leaf_keeps_an_attrs_class_whole() -> None:
    @attrs.frozen
    class Opaque:
        value: int

    tree.register_leaf(Opaque)
    thing = Opaque(1)
    assert tree.leaves([thing]) == [thing]


def test_empty_containers_have_no_leaves() -> None:
    leaves, treedef = tree.flatten({"a": [], "b": (), "c": {}, "d": None})
    assert leaves == []
    assert tree.unflatten(treedef, []) == {"a": [], "b": (), "c": {}, "d": None}


def test_dicts_with_unsortable_keys_keep_insertion_order() -> None:
    assert tree.leaves({2: "two", "one": 1}) == ["two", 1]
