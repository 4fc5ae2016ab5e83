import numpy as np

def revalue(start: int, stop: int, c0: int, c1: int, kind: np.ndarray, inverse: np.ndarray, conv: np.ndarray,
            und: np.ndarray, F: np.ndarray, K: np.ndarray, cp: np.ndarray, T: np.ndarray, cs: np.ndarray,
            vol: np.ndarray, vscale: np.ndarray, vmode: np.ndarray, index: np.ndarray, min_up: np.ndarray,
            move: np.ndarray, vshock: np.ndarray, dt: float, volmat: np.ndarray | None,
            out: np.ndarray) -> None: ...
