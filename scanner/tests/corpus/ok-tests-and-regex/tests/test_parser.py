import ast

def test_literal():
    assert ast.literal_eval("[1, 2]") == [1, 2]
