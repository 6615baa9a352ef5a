"""Regression found by `padre fuzz castling_vit --backend torch` (shrunk example): in the init
regime, non-finite output where the reference and the eager twin are finite."""

from padre_compiler.verify.fuzz import Example, check_example


def test_castling_vit_torch_d130e1cdb8() -> None:
    example = Example(dim=8, tokens=10, grid=None,
                      batch=2, dtype='bfloat16', seed=32626340,
                      conv_form='auto', grad=False)
    outcome = check_example('castling_vit', example, backend='torch')
    assert outcome.ok, outcome
