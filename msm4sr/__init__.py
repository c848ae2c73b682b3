"""MSM4SR (MP4SR): multimodal pre-training for sequential recommendation.

Importing the package registers the model "msm4sr" in bench.nn.model.MODELS.
"""

from msm4sr import model  # noqa: F401
from msm4sr.config import MSM4SRConfig  # noqa: F401
from msm4sr.model import MSM4SR  # noqa: F401
