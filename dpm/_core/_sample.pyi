from typing import Callable

import numpy as np

def strip_positions(mm: np.ndarray, first: np.ndarray, L: np.ndarray, size: np.ndarray, spot: np.ndarray,
                    opt: np.ndarray, delta: np.ndarray, cs: np.ndarray, u: np.ndarray,
                    q: np.ndarray, chunks: Callable[[Callable[[int, int], None], int], None] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def nearest_typed(cp: np.ndarray, grp: np.ndarray, strike: np.ndarray, shift: np.ndarray,
                  calls: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                  puts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], big: float,
                  chunks: Callable[[Callable[[int, int], None], int], None] | None = None) -> np.ndarray: ...
def random_group(accs: np.ndarray, und: np.ndarray, r: np.ndarray, near_bias: bool, start: np.ndarray,
                 count: np.ndarray) -> np.ndarray: ...
class PartsRows:
    indptr: np.ndarray
    inst: np.ndarray
    qty: np.ndarray
    gross: np.ndarray
    def __init__(self, acc_parts: list[np.ndarray], inst_parts: list[np.ndarray], qty_parts: list[np.ndarray],
                 unit: np.ndarray, n: int) -> None: ...
    def scatter(self, a0: int, a1: int) -> None: ...
def format_ids(prefix: str, width: int, n: int) -> list[str]: ...
