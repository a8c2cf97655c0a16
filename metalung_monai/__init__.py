"""metalung-monai: HU-preserving lung-tumour CT augmentation and synthesis for MONAI.

Pipeline, one package per stage:

* :mod:`metalung_monai.io`: ingestion (DICOM series and slices, NIfTI/NRRD/MHA, the thesis'
  pickles) into int16 HU, and the datalist.
* :mod:`metalung_monai.anatomy`: lung, vessel and free-space masks by HU; Lung-RADS class.
* :mod:`metalung_monai.phantom`: the synthetic chest-CT cohort used as default data.
* :mod:`metalung_monai.transforms`: MONAI transforms (MetaLung, HU windowing, CLAHE).
* :mod:`metalung_monai.networks`: DeepLabV3 and the Mask R-CNN adapter.
* :mod:`metalung_monai.training`: glue for the MONAI bundles in ``bundles/``, the experiment.
* :mod:`metalung_monai.evaluation`: metrics per image / class / patient, tables, figures.
"""

import logging as _logging

__version__ = "0.1.0"

# MONAI 1.6.1 logs a warning at every DICOM read on machines without nvImageCodec/CUDA (its GPU
# decoder plugin); pydicom's own decoders are used, so the message is noise for our users.
_logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(_logging.ERROR)
