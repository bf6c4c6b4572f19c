"""The per-stream LSTM autoencoder: tiny (one LSTM layer each way, `HIDDEN` units), trained for a few epochs on
the stream's own history, scoring a window by its reconstruction error. CPU only, one thread per worker."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .detector import MAD_SCALE, DetectorConfig

# one thread per process, the service's and each training worker's: the models are tiny, so more threads only
# contend with each other and with the other services for the cores; throughput scales with processes
torch.set_num_threads(1)

HIDDEN = 16
EPOCHS = 30
BATCH = 64
STRIDE = 2
LEARNING_RATE = 0.01
VALIDATION = 0.2
SEED = 7


class Autoencoder(nn.Module):
    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.encoder = nn.LSTM(1, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, window, 1)
        _, (h, _) = self.encoder(x)
        code = h[-1].unsqueeze(1).expand(-1, x.size(1), -1)
        decoded, _ = self.decoder(code)
        return self.out(decoded)


@dataclass
class TrainedModel:
    """A trained autoencoder with the normalisation and validation-error statistics it scores with."""

    version: str
    net: Autoencoder
    center: float
    scale: float
    error_median: float
    error_mad: float
    metadata: dict = field(default_factory=dict)
    calibration: list[float] = field(default_factory=list)

    def errors(self, windows: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(((windows - self.center) / self.scale).astype(np.float32)).unsqueeze(-1)
        with torch.inference_mode():
            return ((self.net(x) - x) ** 2).mean(dim=(1, 2)).numpy()

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.net.state_dict(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, version: str, center: float, scale: float, error_median: float,
                   error_mad: float, metadata: dict) -> TrainedModel:
        net = Autoencoder(metadata.get("hidden", HIDDEN))
        net.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
        net.eval()
        return cls(version, net, center, scale, error_median, error_mad, metadata)


def _windows(values: np.ndarray, size: int, stride: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(values, size)[::stride]


def train(values: np.ndarray, config: DetectorConfig, version: str) -> TrainedModel:
    """Trains on `values` (the stream's history, oldest first); the last VALIDATION share of windows is held out
    to measure the error distribution that scores are standardised by."""
    torch.manual_seed(SEED)
    began = time.perf_counter()
    values = np.asarray(values, dtype=np.float64)
    center = float(np.median(values))
    q1, q3 = np.quantile(values, [0.25, 0.75])
    scale = float(q3 - q1) or float(np.std(values)) or max(abs(center) * 1e-3, 1e-6)
    windows = _windows((values - center) / scale, config.window, STRIDE).astype(np.float32)
    split = max(1, int(len(windows) * (1 - VALIDATION)))
    fit, held = torch.from_numpy(windows[:split]).unsqueeze(-1), torch.from_numpy(windows[split:]).unsqueeze(-1)
    net = Autoencoder()
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(fit), generator=generator).split(BATCH):
            batch = fit[idx]
            optimiser.zero_grad()
            loss = ((net(batch) - batch) ** 2).mean()
            loss.backward()
            optimiser.step()
    net.eval()
    model = TrainedModel(version, net, center, scale, 0.0, 0.0)
    # the held-out windows (the last one if there are too few), back in the stream's units
    errors = model.errors((windows[split:] if len(held) else windows[-1:]) * scale + center)
    model.error_median = float(np.median(errors))
    model.error_mad = float(np.median(np.abs(errors - model.error_median))) or model.error_median or 1e-6
    # the validation windows' scores calibrate the detector's threshold as soon as the model is installed
    model.calibration = [max(0.0, (float(e) - model.error_median) / (model.error_mad * MAD_SCALE)) for e in errors]
    model.metadata = {"hidden": HIDDEN, "epochs": EPOCHS, "window": config.window, "stride": STRIDE,
                      "learning_rate": LEARNING_RATE, "train_points": int(len(values)),
                      "validation_error": float(np.mean(errors)), "train_seconds": time.perf_counter() - began}
    return model


def train_serialized(values: np.ndarray, config: DetectorConfig, version: str) -> dict:
    """`train` for a worker process: returns what `TrainedModel.from_bytes` rebuilds the model from."""
    model = train(values, config, version)
    return {"blob": model.to_bytes(), "version": version, "center": model.center, "scale": model.scale,
            "error_median": model.error_median, "error_mad": model.error_mad, "metadata": model.metadata,
            "calibration": model.calibration}
