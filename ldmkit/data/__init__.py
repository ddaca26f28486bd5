"""Training data: the built-in ``shapes`` scenes, folders of captioned images, and image helpers."""

from ldmkit.data.collate import collate
from ldmkit.data.dataset import DataError, build_dataset
from ldmkit.data.imagefolder import IMAGE_EXTENSIONS, ImageFolderDataset
from ldmkit.images import image_to_tensor, load_image, make_grid, save_grid, tensor_to_pil
from ldmkit.data.shapes import (
    BACKGROUND,
    COLORS,
    INVERSE_RELATION,
    POSITIONS,
    RELATIONS,
    RGB,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    caption_scene,
    object_matches,
    parse_prompt,
    prompt_matches_scene,
    render_scene,
    sample_scene,
)
from ldmkit.data.shapes_dataset import ShapesDataset, shapes_sample

__all__ = [
    "BACKGROUND",
    "COLORS",
    "DataError",
    "IMAGE_EXTENSIONS",
    "INVERSE_RELATION",
    "ImageFolderDataset",
    "POSITIONS",
    "RELATIONS",
    "RGB",
    "SHAPES",
    "SIZES",
    "Scene",
    "ShapeObject",
    "ShapesDataset",
    "build_dataset",
    "caption_scene",
    "collate",
    "image_to_tensor",
    "load_image",
    "make_grid",
    "object_matches",
    "parse_prompt",
    "prompt_matches_scene",
    "render_scene",
    "sample_scene",
    "save_grid",
    "shapes_sample",
    "tensor_to_pil",
]
