"""Standardisation of probe inputs: sklearn's ``StandardScaler`` as the original's sklearn computed it."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np

from ..errors import UserError, one_line


@dataclass
class Scaler:
    """z-scoring with training statistics, as sklearn's ``StandardScaler(with_mean=f, with_std=f)``.

    ``mean`` and ``scale`` are float64 ``(D,)`` (``None`` when not
    standardising); a (near-)constant feature gets scale 1, as in sklearn.
    """

    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    @classmethod
    def fit(cls, X: np.ndarray, standardize: bool) -> Scaler:
        """Fit on training features ``X`` ``(N, D)`` (float64 accumulation)."""
        if not standardize:
            return cls()
        n = X.shape[0]
        mean = X.sum(0, dtype=np.float64) / n
        var = np.square(X - mean).sum(0) / n
        eps = np.finfo(np.float64).eps
        scale = np.sqrt(var)
        scale[var <= n * eps * var + (n * mean * eps) ** 2] = 1.0
        return cls(mean, scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / scale`` as float32 ``(N, D)``.

        Computed as the sklearn of the original's time did: in place on a
        float32 copy with float64 statistics (recent sklearn first rounds the
        statistics to float32, which differs by float32 rounding).
        """
        out = np.array(X, dtype=np.float32)
        if self.mean is not None:
            out -= self.mean
            out /= self.scale
        return out

    def to_bytes(self) -> bytes:
        """The ``.npz`` serialisation (no pickle)."""
        buf = io.BytesIO()
        standardize = self.mean is not None
        empty = np.zeros(0)
        np.savez(
            buf,
            standardize=np.array(standardize),
            mean=self.mean if standardize else empty,
            scale=self.scale if standardize else empty,
        )
        return buf.getvalue()

    @classmethod
    def from_file(cls, path, dim: int | None = None) -> Scaler:
        """Read ``scaler.npz`` (of ``dim`` features, when given); one-line UserError when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if not bool(z["standardize"]):
                    return cls()
                mean, scale = np.asarray(z["mean"], np.float64), np.asarray(z["scale"], np.float64)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(
                f"{path}: not a readable scaler ({type(exc).__name__}: {one_line(exc)})"
            ) from None
        if mean.ndim != 1 or mean.shape != scale.shape or (dim is not None and mean.shape != (dim,)):
            raise UserError(f"{path}: mean {mean.shape} and scale {scale.shape} do not fit {dim} features")
        return cls(mean, scale)
