"""Video, mask and frame files."""

from .frames import FrameStore
from .masks import generated_mask, iter_masks, load_mask
from .video import iter_video, read_video, resize_frames, video_fps, write_video

__all__ = [
    "FrameStore",
    "generated_mask",
    "iter_masks",
    "iter_video",
    "load_mask",
    "read_video",
    "resize_frames",
    "video_fps",
    "write_video",
]
