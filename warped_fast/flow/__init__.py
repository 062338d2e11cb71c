"""Optical flow without weight downloads: OpenCV DIS (default), RAFT from a local weights file, given
flows (tensors, ``.npy``, ``.flo``); latent-grid mapping, composition back to frame 0, occlusions."""

from .compose import coords_to_first, flow_to_first, occlusions
from .dis import estimate_flow, to_gray_u8
from .io import as_flow, load_flow, read_flo, save_flow, write_flo
from .latent import flow_to_latent
from .raft import estimate_flow_raft, load_raft

__all__ = [
    "as_flow",
    "coords_to_first",
    "estimate_flow",
    "estimate_flow_raft",
    "flow_to_first",
    "flow_to_latent",
    "load_flow",
    "load_raft",
    "occlusions",
    "read_flo",
    "save_flow",
    "to_gray_u8",
    "write_flo",
]
