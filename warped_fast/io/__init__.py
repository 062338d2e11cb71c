"""Video, mask and frame files."""

from .frames import FrameStore
from .masks import generated_mask, load_mask
from .video import read_video, resize_frames, write_video

__all__ = ["FrameStore", "generated_mask", "load_mask", "read_video", "resize_frames", "write_video"]
