"""Re-exports `ldmkit.images` (PIL ↔ tensor conversions and sample grids), which lives outside
`ldmkit.data` so that pipelines can use it without importing the training datasets."""

from ldmkit.images import (  # noqa: F401
    center_crop_resize, image_to_tensor, load_image, make_grid, save_grid, tensor_to_pil, to_rgb,
)
