"""metalung-monai: HU-preserving lung-tumour CT augmentation and synthesis for MONAI.

Pipeline, one package per stage:

* :mod:`metalung_monai.io`: ingestion (DICOM series and slices, NIfTI/NRRD/MHA, the thesis'
  pickles) into int16 HU, and the datalist.
* :mod:`metalung_monai.anatomy`: lung, vessel and free-space masks by HU; Lung-RADS class.
* :mod:`metalung_monai.phantom`: the synthetic chest-CT cohort used as default data.
* :mod:`metalung_monai.transforms`: MONAI transforms (HU windowing, CLAHE, MetaLung).
"""

__version__ = "0.1.0"
