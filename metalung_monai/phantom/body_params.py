"""Sampled parameters of the phantom's chest: one typed record drawn by one function.

TorchIO's *get-params / apply* split: :func:`sample_body_params` draws every number of one
patient's chest from a ``numpy.random.Generator`` into a :class:`BodyParams`; rendering
(:class:`metalung_monai.phantom.body.ChestAnatomy`) only reads it. A logged :class:`BodyParams`
therefore reproduces the anatomy without its random state.

Conventions: anatomical millimetres ``(Z, Y, X)`` (``X`` to the patient's left, ``Y`` posterior,
``Z`` superior; ``X = Y = 0`` at the body centre, ``Z = 0`` at the lowest point of the lungs);
every length is in mm, every ``hu_*`` in Hounsfield units, angles in radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .lungs import dome_height
from .tubes import Tube, sample_tubes

__all__ = [
    "BodyParams",
    "Diaphragm",
    "cavity_half_axes",
    "sample_body_params",
    "superellipse_rho",
]


@dataclass(frozen=True)
class Diaphragm:
    """Two elliptic-paraboloid domes under the lungs (the right one higher).

    Attributes:
        right_z, left_z: height of each dome's top.
        right_x, left_x: ``X`` of each dome's top.
        y: ``Y`` of both tops.
        radius_x, radius_y: horizontal radii at which a dome reaches ``Z = 0``.
    """

    right_z: float
    left_z: float
    right_x: float
    left_x: float
    y: float
    radius_x: float
    radius_y: float


@dataclass(eq=False)  # holds numpy arrays: compare fields explicitly
class BodyParams:
    """Every sampled number of one patient's chest (mm, HU, radians), in sampling order.

    Thoracic cavity and wall: the cavity is an ellipse (``cavity_half_width`` in ``X``,
    ``cavity_half_depth`` in ``Y``, centred at ``(cavity_centre_y, 0)``) that narrows towards the
    apex from ``taper_start_z`` by the fractions ``apex_width_taper`` / ``apex_depth_taper``;
    around it lie a layer of ribs and intercostal muscle (``rib_layer_thickness``), the chest-wall
    muscle (thicknesses per side) and the subcutaneous fat. The body and muscle outlines are
    superellipses (exponents ``outline_exponent_front`` / ``_back``: a flatter back) with half
    axes ``body_half_*`` / ``muscle_half_*``, fitted inside the field of view.

    Attributes not described by their names:
        midline_x: ``X`` of the mediastinal midline (the lungs' dividing line).
        mediastinum_half_width_front, mediastinum_half_width_back: half width of the mediastinal
            band the lungs avoid, at the front and back of the cavity.
        vertebra_phase_z: ``Z`` at which a vertebra period (disc then bone) starts.
        apex_cap_z: ``Z`` above which each lung is confined to its rounded apical cap, centred at
            ``(apex_cap_y, +-apex_cap_x)`` with radii ``apex_cap_radius_x/_y`` at its base.
        heart_semi_axis_x/_y/_z: semi-axes of the heart ellipsoid, rotated by ``heart_angle``
            about ``Z`` (long axis towards the left-anterior).
        hilum_x: ``|X|`` of both hila.
        first_rib_z, rib_spacing: ``Z`` of the first rib at the back, distance between ribs.
        rib_anterior_drop, rib_drop_exponent: how far (mm) and how (power of the angle) the ribs
            descend from back to front.
        rib_radius_radial, rib_radius_z: semi-axes of a rib's cross-section.
        scapula_depth, scapula_thickness: distance outside the cavity and thickness of the
            scapulae.
        table_curvature: ``Y`` sag of the table per mm^2 of ``X``.
        hu_lung, hu_lung_gradient: mean parenchyma HU and its anterior-to-posterior increase.
        stomach_gas_fraction: fraction of the stomach's depth filled by gas (anteriorly).
        stomach_semi_axes, spleen_semi_axes: ``(Z, Y, X)`` semi-axes.
        scan_bottom_z, scan_top_z: ``Z`` range a scan of this patient covers.
        tubes: vessels, airways, oesophagus and clavicles (drawn after the scalars).
        artery_hila, vein_hila, bronchus_hila: per side (``"right"``, ``"left"``), where the
            pulmonary arteries (one point), veins (two points) and main bronchi (one point) enter
            the lung: the roots of :mod:`metalung_monai.phantom.vessels`' trees.
        main_bronchus_radius: per side, the main bronchus radius at the hilum.
    """

    contrast: bool
    lung_height: float
    cavity_half_width: float
    cavity_half_depth: float
    subcutaneous_fat_thickness: float
    lateral_muscle_thickness: float
    anterior_muscle_thickness: float
    posterior_muscle_thickness: float
    rib_layer_thickness: float
    outline_exponent_front: float
    outline_exponent_back: float
    body_half_width: float
    body_half_depth: float
    cavity_centre_y: float
    muscle_half_width: float
    muscle_half_depth: float
    taper_start_z: float
    apex_width_taper: float
    apex_depth_taper: float
    midline_x: float
    mediastinum_half_width_front: float
    mediastinum_half_width_back: float
    vertebral_body_radius_x: float
    vertebral_body_radius_y: float
    vertebral_body_y: float
    spinal_canal_radius: float
    spinal_canal_y: float
    vertebra_height: float
    disc_thickness: float
    vertebra_phase_z: float
    oesophagus_radius: float
    oesophagus_y: float
    oesophagus_x: float
    oesophagus_has_air: bool
    trachea_radius: float
    trachea_wall_thickness: float
    trachea_y: float
    carina_z: float
    diaphragm: Diaphragm
    apex_cap_z: float
    apex_cap_x: float
    apex_cap_radius_x: float
    apex_cap_y: float
    apex_cap_radius_y: float
    heart_semi_axis_x: float
    heart_semi_axis_y: float
    heart_semi_axis_z: float
    heart_angle: float
    heart_x: float
    heart_y: float
    heart_z: float
    myocardium_thickness: float
    aorta_radius: float
    descending_aorta_radius: float
    aortic_arch_z: float
    ascending_aorta_x: float
    ascending_aorta_y: float
    descending_aorta_x: float
    descending_aorta_y: float
    hilum_x: float
    sternum_top_z: float
    sternum_bottom_z: float
    sternum_radius_x: float
    sternum_radius_y: float
    first_rib_z: float
    rib_spacing: float
    rib_anterior_drop: float
    rib_drop_exponent: float
    chest_wall_fat_thickness: float
    rib_radius_radial: float
    rib_radius_z: float
    cortex_thickness: float
    scapula_depth: float
    scapula_thickness: float
    has_table: bool
    table_y: float
    table_curvature: float
    hu_air: float
    hu_fat: float
    hu_mediastinal_fat: float
    hu_muscle: float
    hu_blood: float
    hu_myocardium: float
    hu_liver: float
    hu_spleen: float
    hu_stomach: float
    hu_abdominal_fat: float
    hu_cortical_bone: float
    hu_marrow: float
    hu_cartilage: float
    hu_disc: float
    hu_csf: float
    hu_airway_wall: float
    hu_table: float
    hu_lung: float
    hu_lung_gradient: float
    stomach_gas_fraction: float
    stomach_semi_axes: tuple[float, float, float]
    stomach_x: float
    stomach_y: float
    stomach_z: float
    spleen_semi_axes: tuple[float, float, float]
    spleen_x: float
    spleen_y: float
    spleen_z: float
    scan_bottom_z: float
    scan_top_z: float
    tubes: list[Tube] = field(default_factory=list)
    artery_hila: dict[str, np.ndarray] = field(default_factory=dict)
    vein_hila: dict[str, list[np.ndarray]] = field(default_factory=dict)
    bronchus_hila: dict[str, np.ndarray] = field(default_factory=dict)
    main_bronchus_radius: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- geometry
def superellipse_rho(
    Y, X, centre_y, half_width, half_depth_front, half_depth_back, exp_front, exp_back
):
    """Normalised superellipse radius (< 1 inside) of the body outline (flatter back)."""
    dy = Y - centre_y
    back = dy > 0
    b = np.where(back, half_depth_back, half_depth_front)
    pw = np.where(back, exp_back, exp_front)
    return (np.abs(X / half_width) ** pw + np.abs(dy / b) ** pw) ** (1.0 / pw)


def _tapered_half_axes(
    Z, lung_height, taper_start_z, half_width, half_depth, width_taper, depth_taper
):
    s = np.clip(
        (np.asarray(Z, dtype=np.float64) - taper_start_z) / (lung_height - taper_start_z), 0.0, 1.25
    )
    s = s**1.6
    return half_width * (1.0 - width_taper * s), half_depth * (1.0 - depth_taper * s)


def cavity_half_axes(p: BodyParams, Z):
    """Half width and half depth (mm) of the thoracic cavity at height(s) ``Z`` (narrower at the apex)."""
    return _tapered_half_axes(
        Z,
        p.lung_height,
        p.taper_start_z,
        p.cavity_half_width,
        p.cavity_half_depth,
        p.apex_width_taper,
        p.apex_depth_taper,
    )


def _body_outline(
    cavity_half_width, cavity_half_depth, fat, rib_layer, lateral, anterior, posterior
):
    """Body and muscle half axes and the cavity centre from the cavity and the wall thicknesses."""
    ant = rib_layer + anterior + fat
    post = rib_layer + posterior + fat
    body_half_width = cavity_half_width + rib_layer + lateral + fat
    body_half_depth = cavity_half_depth + 0.5 * (ant + post)
    centre_y = 0.5 * (ant - post)  # cavity centre (anterior of the body centre: thick back)
    return body_half_width, body_half_depth, centre_y, body_half_width - fat, body_half_depth - fat


def _body_radius_max(half_width, half_depth, exp_front, exp_back) -> float:
    """Largest distance (mm, on a 1-mm ladder from 50) from the body centre to the body outline."""
    t = np.linspace(0, 2 * np.pi, 361)
    c, s = np.cos(t), np.sin(t)
    best = 0.0
    for r in np.linspace(50, 400, 351):
        x, y = r * c, r * s
        rho = superellipse_rho(y, x, 0.0, half_width, half_depth, half_depth, exp_front, exp_back)
        if np.any(rho <= 1.0):
            best = r
    return best


# ---------------------------------------------------------------------------------- sampling
def sample_body_params(
    rng: np.random.Generator,
    fov_mm: float,
    contrast: bool,
    lung_height: float | None = None,
) -> BodyParams:
    """Draw the chest of one patient.

    The draws (their number and order from ``rng``) define the cohort: changing them changes
    every phantom generated from a seed.

    Args:
        rng: generator (consumed).
        fov_mm: reconstruction field of view (mm); the body is fitted inside its circle.
        contrast: intravenous contrast (blood pool 150-300 HU) or not (30-50 HU).
        lung_height: apex-to-base lung height in mm (default: uniform 200-265).
    """
    u = rng.uniform
    lung_height = float(lung_height if lung_height is not None else u(200.0, 265.0))
    # thoracic cavity and wall
    cavity_half_width = u(112.0, 134.0)
    cavity_half_depth = u(74.0, 94.0)
    fat = u(5.0, 28.0)
    lateral_muscle = u(6.0, 11.0)
    anterior_muscle = u(9.0, 15.0)
    posterior_muscle = u(30.0, 42.0)
    rib_layer = 9.0
    exp_front = u(2.0, 2.3)
    exp_back = u(2.5, 3.2)
    # fit the body inside the field-of-view circle (radius fov/2 minus a few mm of air): thinner
    # subcutaneous fat first, then a smaller cavity
    for _ in range(40):
        outline = _body_outline(
            cavity_half_width,
            cavity_half_depth,
            fat,
            rib_layer,
            lateral_muscle,
            anterior_muscle,
            posterior_muscle,
        )
        if _body_radius_max(outline[0], outline[1], exp_front, exp_back) <= 0.5 * fov_mm - 6.0:
            break
        if fat > 6.0:
            fat = max(5.0, fat - 3.0)
        else:
            cavity_half_width *= 0.97
            cavity_half_depth *= 0.97
    body_half_width, body_half_depth, yc, muscle_half_width, muscle_half_depth = outline
    a_in, b_in = cavity_half_width, cavity_half_depth
    taper_start_z = 0.25 * lung_height
    apex_width_taper = u(0.24, 0.32)
    apex_depth_taper = u(0.12, 0.2)
    # mediastinum midline and band
    midline_x = u(-2.0, 5.0)
    band_front = u(1.5, 4.5)
    band_back = u(8.0, 13.0)
    # spine
    vb_rx = u(16.0, 21.0)
    vb_ry = u(13.0, 17.0)
    vb_y = yc + b_in - vb_ry - u(2.0, 7.0)
    canal_r = u(7.0, 9.0)
    canal_y = vb_y + vb_ry + canal_r + 1.0
    vertebra_height = u(23.0, 27.0)
    disc_thickness = u(4.0, 6.0)
    vertebra_phase_z = u(0.0, vertebra_height)
    # airway, oesophagus
    eso_r = u(6.5, 8.5)
    eso_y = vb_y - vb_ry - eso_r - 1.5
    eso_x = u(2.0, 8.0)
    eso_air = bool(rng.random() < 0.5)
    tr_r = u(8.0, 10.0)
    tr_wall = u(1.8, 2.6)
    tr_y = eso_y - eso_r - tr_r - 2.0
    carina_z = lung_height * u(0.56, 0.63)
    # diaphragm domes (right higher), apex cap
    right_dome_z = lung_height * u(0.26, 0.34)
    diaphragm = Diaphragm(
        right_z=right_dome_z,
        left_z=right_dome_z - u(8.0, 22.0),
        right_x=-0.45 * a_in,
        left_x=0.45 * a_in,
        y=yc - 0.2 * b_in,
        radius_x=0.62 * a_in,
        radius_y=1.0 * b_in,
    )
    apex_cap_z = lung_height - u(70.0, 95.0)
    a0, b0 = _tapered_half_axes(
        apex_cap_z, lung_height, taper_start_z, a_in, b_in, apex_width_taper, apex_depth_taper
    )
    # heart (ellipsoid on the left dome, long axis towards left-anterior)
    heart_a = u(52.0, 64.0)
    heart_b = u(42.0, 52.0)
    heart_c = u(45.0, 55.0)
    heart_angle = math.radians(u(25.0, 40.0))
    heart_x = u(12.0, 24.0)
    heart_y = yc - u(0.1, 0.25) * b_in
    heart_z = diaphragm.left_z * 0.55 + 0.72 * heart_c
    myocardium = u(7.0, 10.0)
    # great vessels
    aorta_r = u(13.0, 16.5)
    aorta_r_desc = u(10.0, 12.5)
    arch_z = carina_z + u(18.0, 30.0)
    asc_x = u(-4.0, 6.0)
    asc_y = tr_y - u(28.0, 38.0)
    # sternum, ribs, scapulae
    sternum_top_z = carina_z + u(45.0, 60.0)
    sternum_bottom_z = diaphragm.right_z - u(0.0, 15.0)
    sternum_rx = u(13.0, 17.0)
    sternum_ry = u(5.0, 7.0)
    first_rib_z = lung_height + u(0.0, 10.0)
    rib_spacing = u(22.0, 26.0)
    rib_drop = u(120.0, 150.0)
    rib_drop_exponent = u(1.1, 1.3)
    wall_fat = u(1.5, 4.0)
    rib_radius_radial = u(2.8, 3.6)
    rib_radius_z = u(5.0, 6.5)
    cortex = u(1.8, 2.4)
    scapula_depth = u(12.0, 16.0)
    scapula_thickness = u(3.0, 4.5)
    # table
    has_table = bool(rng.random() < 0.85)
    table_y = body_half_depth + u(0.0, 8.0)
    table_curvature = u(0.0003, 0.0009)
    # tissue HU
    hu_fat = u(-115.0, -85.0)
    hu_mediastinal_fat = hu_fat + u(-5.0, 15.0)
    hu_muscle = u(35.0, 55.0)
    if contrast:
        hu_blood = u(150.0, 300.0)
        hu_myocardium = u(90.0, 130.0)
        hu_liver = u(95.0, 125.0)
        hu_spleen = u(100.0, 130.0)
    else:
        hu_blood = u(35.0, 50.0)
        hu_myocardium = hu_blood + u(-2.0, 8.0)
        hu_liver = u(50.0, 66.0)
        hu_spleen = u(40.0, 52.0)
    hu_stomach = u(5.0, 30.0)
    hu_abdominal_fat = u(-95.0, -60.0)
    hu_cortical_bone = u(750.0, 1000.0)
    hu_marrow = u(180.0, 350.0)
    hu_cartilage = u(90.0, 160.0)
    hu_disc = u(70.0, 95.0)
    hu_csf = u(10.0, 30.0)
    hu_airway_wall = u(-20.0, 40.0)
    hu_table = u(120.0, 260.0)
    hu_lung = u(-910.0, -870.0)  # calibrated on real chest CT (docs/phantom.md)
    hu_lung_gradient = u(30.0, 70.0)
    # abdomen (stomach with a gas bubble under the left dome, spleen behind it)
    stomach_gas_fraction = u(0.12, 0.4)
    stomach_axes = (u(35.0, 45.0), u(32.0, 40.0), u(36.0, 46.0))
    stomach_x = 0.45 * a_in
    stomach_y = yc - 0.25 * b_in
    stomach_z = float(dome_height(diaphragm, stomach_y, stomach_x)) - 4.0 - 0.8 * stomach_axes[0]
    spleen_axes = (u(40.0, 50.0), u(30.0, 38.0), u(16.0, 22.0))
    spleen_x = 0.72 * a_in
    spleen_y = yc + 0.5 * b_in
    spleen_z = float(dome_height(diaphragm, spleen_y, spleen_x)) - 6.0 - 0.7 * spleen_axes[0]
    scan_bottom_z = -u(15.0, 35.0)
    scan_top_z = lung_height + u(12.0, 30.0)
    p = BodyParams(
        contrast=bool(contrast),
        lung_height=lung_height,
        cavity_half_width=a_in,
        cavity_half_depth=b_in,
        subcutaneous_fat_thickness=fat,
        lateral_muscle_thickness=lateral_muscle,
        anterior_muscle_thickness=anterior_muscle,
        posterior_muscle_thickness=posterior_muscle,
        rib_layer_thickness=rib_layer,
        outline_exponent_front=exp_front,
        outline_exponent_back=exp_back,
        body_half_width=body_half_width,
        body_half_depth=body_half_depth,
        cavity_centre_y=yc,
        muscle_half_width=muscle_half_width,
        muscle_half_depth=muscle_half_depth,
        taper_start_z=taper_start_z,
        apex_width_taper=apex_width_taper,
        apex_depth_taper=apex_depth_taper,
        midline_x=midline_x,
        mediastinum_half_width_front=band_front,
        mediastinum_half_width_back=band_back,
        vertebral_body_radius_x=vb_rx,
        vertebral_body_radius_y=vb_ry,
        vertebral_body_y=vb_y,
        spinal_canal_radius=canal_r,
        spinal_canal_y=canal_y,
        vertebra_height=vertebra_height,
        disc_thickness=disc_thickness,
        vertebra_phase_z=vertebra_phase_z,
        oesophagus_radius=eso_r,
        oesophagus_y=eso_y,
        oesophagus_x=eso_x,
        oesophagus_has_air=eso_air,
        trachea_radius=tr_r,
        trachea_wall_thickness=tr_wall,
        trachea_y=tr_y,
        carina_z=carina_z,
        diaphragm=diaphragm,
        apex_cap_z=apex_cap_z,
        apex_cap_x=0.5 * a0,
        apex_cap_radius_x=0.64 * a0,
        apex_cap_y=yc + 0.1 * b0,
        apex_cap_radius_y=1.08 * b0,
        heart_semi_axis_x=heart_a,
        heart_semi_axis_y=heart_b,
        heart_semi_axis_z=heart_c,
        heart_angle=heart_angle,
        heart_x=heart_x,
        heart_y=heart_y,
        heart_z=heart_z,
        myocardium_thickness=myocardium,
        aorta_radius=aorta_r,
        descending_aorta_radius=aorta_r_desc,
        aortic_arch_z=arch_z,
        ascending_aorta_x=asc_x,
        ascending_aorta_y=asc_y,
        descending_aorta_x=vb_rx * 0.7 + aorta_r_desc * 0.9,
        descending_aorta_y=vb_y - vb_ry * 0.55,
        hilum_x=0.36 * a_in + 8.0,
        sternum_top_z=sternum_top_z,
        sternum_bottom_z=sternum_bottom_z,
        sternum_radius_x=sternum_rx,
        sternum_radius_y=sternum_ry,
        first_rib_z=first_rib_z,
        rib_spacing=rib_spacing,
        rib_anterior_drop=rib_drop,
        rib_drop_exponent=rib_drop_exponent,
        chest_wall_fat_thickness=wall_fat,
        rib_radius_radial=rib_radius_radial,
        rib_radius_z=rib_radius_z,
        cortex_thickness=cortex,
        scapula_depth=scapula_depth,
        scapula_thickness=scapula_thickness,
        has_table=has_table,
        table_y=table_y,
        table_curvature=table_curvature,
        hu_air=-1000.0,
        hu_fat=hu_fat,
        hu_mediastinal_fat=hu_mediastinal_fat,
        hu_muscle=hu_muscle,
        hu_blood=hu_blood,
        hu_myocardium=hu_myocardium,
        hu_liver=hu_liver,
        hu_spleen=hu_spleen,
        hu_stomach=hu_stomach,
        hu_abdominal_fat=hu_abdominal_fat,
        hu_cortical_bone=hu_cortical_bone,
        hu_marrow=hu_marrow,
        hu_cartilage=hu_cartilage,
        hu_disc=hu_disc,
        hu_csf=hu_csf,
        hu_airway_wall=hu_airway_wall,
        hu_table=hu_table,
        hu_lung=hu_lung,
        hu_lung_gradient=hu_lung_gradient,
        stomach_gas_fraction=stomach_gas_fraction,
        stomach_semi_axes=stomach_axes,
        stomach_x=stomach_x,
        stomach_y=stomach_y,
        stomach_z=stomach_z,
        spleen_semi_axes=spleen_axes,
        spleen_x=spleen_x,
        spleen_y=spleen_y,
        spleen_z=spleen_z,
        scan_bottom_z=scan_bottom_z,
        scan_top_z=scan_top_z,
    )
    p.tubes, p.artery_hila, p.vein_hila, p.bronchus_hila, p.main_bronchus_radius = sample_tubes(
        p, rng
    )
    return p
