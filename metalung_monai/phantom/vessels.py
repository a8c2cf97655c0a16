"""Pulmonary vessel and bronchial trees of the phantom.

Each lung receives an arterial tree (three lobar roots where the pulmonary artery enters the
hilum) and a venous tree (roots at the superior and inferior pulmonary veins near the left
atrium). Trees are grown by recursive *territory splitting*, a cheap stand-in for constrained
constructive optimisation:

* points sampled uniformly in the lung (one per 3 mm voxel, jittered, half of them kept) are the
  tissue to supply; each root gets the points lying in its direction;
* a node's segment runs from its parent's end 35-65 % of the way towards the centroid of its
  territory, staying inside the lung;
* its radius follows the pipe model / Murray's law, ``r = r_lung * (n / N)^(1/3)`` for a
  territory of ``n`` of the lung's ``N`` points (flow proportional to the tissue supplied), so
  ``r_parent^3 = r_1^3 + r_2^3`` exactly at every bifurcation (about 7-8 mm for the whole lung,
  about 5-6 mm for the lobar trunks, down to ``r_min`` = 2.0 mm, calibrated so that the dense
  fraction of the lungs matches real chest CT: see ``docs/phantom.md``);
* the territory is split across its principal axis at a random offset from the centroid
  (asymmetric branching, branching angles following the geometry of the lung);
* below ``r_min`` the node ends with a tapering twig into its territory.

This fills each lung with a few thousand segments, thick and central near the hila, thin and
dense at the periphery. Bronchi follow the arteries of radius >= 1.6 mm at a small offset,
rendered as air lumens with a soft-tissue wall. On axial slices the vessel cross-sections look
like small round nodules: the very confusion a tumour detector has to learn to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .body import ChestAnatomy
from .labels import LABEL_LUNG_L, LABEL_LUNG_R, LABEL_MEDIASTINUM
from .shapes import Canvas, Grid, segment_depth_batch

__all__ = ["PlanningMap", "Segments", "grow_vessel_trees", "render_segments"]

KIND_ARTERY, KIND_VEIN, KIND_BRONCHUS = 0, 1, 2


class PlanningMap:
    """Coarse (``step`` mm) label map of the lungs used to plan vessels and lesions.

    Attributes:
        grid: the coarse :class:`~.shapes.Grid`.
        label: internal labels on it.
        edt: distance (mm) from each lung voxel to the nearest non-lung voxel (0 outside lungs).
    """

    def __init__(self, anatomy: ChestAnatomy, step: float = 3.0) -> None:
        p = anatomy.params
        lo = np.array(
            [
                -step,
                p.cavity_centre_y - p.cavity_half_depth - 2 * step,
                -p.cavity_half_width - 2 * step,
            ]
        )
        hi = np.array(
            [
                p.lung_height + step,
                p.cavity_centre_y + p.cavity_half_depth + 2 * step,
                p.cavity_half_width + 2 * step,
            ]
        )
        shape = tuple(int(v) for v in np.ceil((hi - lo) / step) + 1)
        self.step = float(step)
        self.grid = Grid(shape, (step, step, step), tuple(lo))
        cv = Canvas(self.grid, with_hu=False)
        anatomy.render(cv)
        self.label = cv.label
        lung = (self.label == LABEL_LUNG_R) | (self.label == LABEL_LUNG_L)
        self.edt = ndimage.distance_transform_edt(lung, sampling=step).astype(np.float32)
        self._lo = lo

    def index(self, pts: np.ndarray):
        """Nearest coarse indices of points ``(n, 3)`` and whether they fall inside the map."""
        idx = np.rint((np.atleast_2d(pts) - self._lo) / self.step).astype(np.intp)
        ok = np.all((idx >= 0) & (idx < np.asarray(self.grid.shape)), axis=1)
        return np.clip(idx, 0, np.asarray(self.grid.shape) - 1), ok

    def lookup(self, arr: np.ndarray, pts: np.ndarray, outside=0) -> np.ndarray:
        """Values of ``arr`` (a map on the coarse grid) at the nearest voxels of ``pts``."""
        idx, ok = self.index(pts)
        v = arr[idx[:, 0], idx[:, 1], idx[:, 2]]
        return np.where(ok, v, outside)

    def lung_label(self, pts) -> np.ndarray:
        """Label (1 right lung, 2 left lung, other tissue labels) at points ``(n, 3)``."""
        return self.lookup(self.label, pts, 0)

    def dist(self, pts) -> np.ndarray:
        """Distance (mm) to the pleura at points ``(n, 3)`` (0 outside the lungs)."""
        return self.lookup(self.edt, pts, 0.0)

    def gradient_dir(self, pt) -> np.ndarray:
        """Unit vector of steepest increase of the lung distance map at ``pt`` (into the lung)."""
        idx, _ = self.index(pt)
        i = idx[0]
        g = []
        for k in range(3):
            a = i.copy()
            b = i.copy()
            a[k] = max(a[k] - 1, 0)
            b[k] = min(b[k] + 1, self.grid.shape[k] - 1)
            g.append(float(self.edt[tuple(b)] - self.edt[tuple(a)]))
        g = np.asarray(g)
        n = np.linalg.norm(g)
        return g / n if n > 0 else g


@dataclass
class Segments:
    """Tapered tube segments of the trees (arrays of equal length ``n``).

    Attributes:
        a, b: ``(n, 3)`` end points ``(Z, Y, X)`` mm; ra, rb: radii (mm) at ``a`` and ``b``.
        kind: 0 artery, 1 vein, 2 bronchus; lung: 1 right, 2 left; gen: generation from the root;
        parent: index of the parent segment (-1 for roots).
    """

    a: np.ndarray
    b: np.ndarray
    ra: np.ndarray
    rb: np.ndarray
    kind: np.ndarray
    lung: np.ndarray
    gen: np.ndarray
    parent: np.ndarray

    def __len__(self) -> int:
        return len(self.ra)

    @staticmethod
    def concat(parts: list[Segments]) -> Segments:
        fields = ("a", "b", "ra", "rb", "kind", "lung", "gen", "parent")
        out = {}
        offset = 0
        for f in fields:
            out[f] = []
        for s in parts:
            for f in fields:
                v = getattr(s, f)
                if f == "parent":
                    v = np.where(v >= 0, v + offset, -1)
                out[f].append(v)
            offset += len(s)
        if not parts:
            return Segments(np.zeros((0, 3)), np.zeros((0, 3)), *(np.zeros(0) for _ in range(6)))
        return Segments(**{f: np.concatenate(out[f]) for f in fields})


def _perp_basis(d: np.ndarray):
    h = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(d, h)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    return e1, e2


def _perp_bases(d: np.ndarray):
    """Orthonormal vectors ``(e1, e2)`` perpendicular to each unit row of ``d`` (m, 3)."""
    h = np.where(
        (np.abs(d[:, 0]) < 0.9)[:, None], np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    )
    e1 = np.cross(d, h)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    return e1, e2


def _murray(kappa):
    """Child radius ratios (alpha, beta) and angles (rad) for asymmetry ``kappa = beta / alpha``.

    Murray's law ``1 = alpha^3 + beta^3`` with the branching angles of minimal work:
    ``cos t1 = (1 + alpha^4 - beta^4) / (2 alpha^2)`` (and symmetrically for ``t2``).
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    alpha = (1.0 / (1.0 + kappa**3)) ** (1.0 / 3.0)
    beta = kappa * alpha
    c1 = np.clip((1 + alpha**4 - beta**4) / (2 * alpha**2), -1.0, 1.0)
    c2 = np.clip((1 + beta**4 - alpha**4) / (2 * beta**2), -1.0, 1.0)
    return alpha, beta, np.arccos(c1), np.arccos(c2)


def _grow_tree(
    roots, points: np.ndarray, pmap: PlanningMap, rng, lung_label: int, kind: int, r_min: float
):
    """Grow a space-filling tree by recursive territory splitting (vectorised per generation).

    Each node owns a *territory*: a set of points sampled uniformly in the lung. Its segment runs
    from the parent's end towards the territory's centroid (stopping 35-65 % of the way), its
    radius follows the pipe model / Murray's law ``r = r_root * (n / n_root)^(1/3)`` (flow
    proportional to the tissue supplied), and it bifurcates by splitting the territory across
    its principal axis at a random offset from the centroid (asymmetric branching). A node whose radius falls
    below ``r_min`` ends with a tapering twig reaching into its territory.

    Args:
        roots: ``[(point, direction, radius)]``; each territory point goes to the root whose
            direction best matches the direction from that root to the point. ``radius`` is the
            radius the tree would have if a single trunk supplied all ``points``.
        points: ``(N, 3)`` territory points (mm) in this lung.

    Returns:
        :class:`Segments` in breadth-first order (parents before children).
    """
    rp = np.array([np.asarray(p, float) for p, _, _ in roots])
    rd = np.array([np.asarray(d, float) / np.linalg.norm(d) for _, d, _ in roots])
    rr = np.array([float(r) for _, _, r in roots])
    rel = points[:, None, :] - rp[None]
    rel /= np.maximum(np.linalg.norm(rel, axis=2, keepdims=True), 1e-6)
    owner = np.argmax((rel * rd[None]).sum(-1), axis=1)
    order = np.argsort(owner, kind="stable")
    X = points[order]
    counts = np.bincount(owner, minlength=len(rp))
    S = np.concatenate([[0], np.cumsum(counts)[:-1]])
    E = S + counts
    live = counts > 0
    P, S, E = rp[live], S[live], E[live]
    Rroot, Nroot = rr[live], np.full(int(live.sum()), float(len(points)))
    parent = np.full(len(P), -1, np.int64)
    A, B, RA, RB, GEN, PAR = [], [], [], [], [], []
    n_seg, gen = 0, 0
    while len(P):
        m = len(P)
        cs = np.vstack([np.zeros((1, 3)), np.cumsum(X, axis=0)])
        n = (E - S).astype(float)
        C = (cs[E] - cs[S]) / n[:, None]
        r = Rroot * (n / Nroot) ** (1.0 / 3.0)
        term = (r < r_min) | (n < 4)
        lam = np.where(term, 1.0, rng.uniform(0.35, 0.65, m))
        Q = P + lam[:, None] * (C - P)
        # keep segments inside the lung (roots may start in the hilum): pull the end back if needed
        t_chk = (0.5, 0.75, 1.0) if gen == 0 else (0.25, 0.5, 0.75, 1.0)
        for _ in range(4):
            out = np.zeros(m, bool)
            for t in t_chk:
                out |= pmap.lung_label(P + t * (Q - P)) != lung_label
            if not out.any():
                break
            Q[out] = P[out] + 0.6 * (Q[out] - P[out])
        out = pmap.lung_label(Q) != lung_label
        if out.any():  # still outside (territory wrapped around the heart): end at its point nearest the centroid
            w = np.flatnonzero(out)
            nw = E[w] - S[w]
            idx = np.repeat(S[w] - np.concatenate([[0], np.cumsum(nw)[:-1]]), nw) + np.arange(
                int(nw.sum())
            )
            node = np.repeat(np.arange(len(w)), nw)
            d2 = ((X[idx] - C[w][node]) ** 2).sum(1)
            best = np.full(len(w), np.inf)
            np.minimum.at(best, node, d2)
            hit = np.flatnonzero(d2 <= best[node])
            _, first = np.unique(node[hit], return_index=True)
            Q[w[node[hit[first]]]] = X[idx[hit[first]]]
        ids = np.arange(n_seg, n_seg + m)
        A.append(P.copy())
        B.append(Q.copy())
        RA.append(r)
        RB.append(np.where(term, 0.35 * r, 0.97 * r))
        GEN.append(np.full(m, gen))
        PAR.append(parent)
        n_seg += m
        br = np.flatnonzero(~term)
        if len(br) == 0:
            break
        # split each branching territory across its principal axis
        Sb, Eb, nb = S[br], E[br], (E[br] - S[br])
        idx = np.repeat(Sb - np.concatenate([[0], np.cumsum(nb)[:-1]]), nb) + np.arange(
            int(nb.sum())
        )
        node = np.repeat(np.arange(len(br)), nb)
        Xb = X[idx] - C[br][node]
        cov = np.empty((len(br), 3, 3))
        for i in range(3):
            for j in range(i, 3):
                cov[:, i, j] = cov[:, j, i] = np.bincount(
                    node, weights=Xb[:, i] * Xb[:, j], minlength=len(br)
                )
        vals, vecs = np.linalg.eigh(cov)
        axis = vecs[:, :, 2] + rng.normal(0.0, 0.15, (len(br), 3))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        proj = (Xb * axis[node]).sum(1)
        sd = np.sqrt(np.maximum(vals[:, 2], 0.0) / nb)
        thr = (2.0 * rng.uniform(0.3, 0.7, len(br)) - 1.0) * 1.2 * sd
        right = proj > thr[node]
        o = np.argsort(node * 2 + right, kind="stable")  # stable partition inside each node
        X[idx] = X[idx[o]]
        mid = Sb + np.bincount(node, weights=~right, minlength=len(br)).astype(np.int64)
        P = np.concatenate([Q[br], Q[br]])
        S = np.concatenate([Sb, mid])
        E = np.concatenate([mid, Eb])
        Rroot = np.concatenate([Rroot[br], Rroot[br]])
        Nroot = np.concatenate([Nroot[br], Nroot[br]])
        parent = np.concatenate([ids[br], ids[br]])
        nonempty = E > S
        P, S, E, Rroot, Nroot, parent = (
            P[nonempty],
            S[nonempty],
            E[nonempty],
            Rroot[nonempty],
            Nroot[nonempty],
            parent[nonempty],
        )
        gen += 1
    n = n_seg
    return Segments(
        np.concatenate(A).reshape(n, 3),
        np.concatenate(B).reshape(n, 3),
        np.concatenate(RA),
        np.concatenate(RB),
        np.full(n, kind, np.int8),
        np.full(n, lung_label, np.int8),
        np.concatenate(GEN).astype(np.int16),
        np.concatenate(PAR).astype(np.int64),
    )


def _bronchi_from_arteries(art: Segments, hilum_b, r_br0: float, min_radius: float) -> Segments:
    """Bronchi alongside the arteries of radius >= ``min_radius``, offset to stay beside them."""
    keep = np.flatnonzero(art.ra >= min_radius)
    if len(keep) == 0:
        return Segments.concat([])
    end_off = {}
    A, B, RA, RB, PAR = [], [], [], [], []
    new_index = {}
    for i in keep:  # parents precede children (breadth-first order)
        a, b = art.a[i], art.b[i]
        d = b - a
        d = d / max(np.linalg.norm(d), 1e-9)
        par = int(art.parent[i])
        rb_ = 0.85 * art.rb[i]
        mag = art.rb[i] + rb_ + 0.7
        if par in end_off:
            start = a + end_off[par]
            o = end_off[par]
        else:  # root: start from the main bronchus end
            start = np.asarray(hilum_b, float)
            o = start - a
        o = o - np.dot(o, d) * d
        if np.linalg.norm(o) < 1e-6:
            o = _perp_basis(d)[0]
        o = o / np.linalg.norm(o) * mag
        end_off[i] = o
        new_index[i] = len(A)
        A.append(start)
        B.append(b + o)
        RA.append(0.85 * art.ra[i] if par in end_off else r_br0)
        RB.append(rb_)
        PAR.append(new_index.get(par, -1))
    n = len(A)
    return Segments(
        np.asarray(A),
        np.asarray(B),
        np.asarray(RA),
        np.asarray(RB),
        np.full(n, KIND_BRONCHUS, np.int8),
        art.lung[keep].copy(),
        art.gen[keep].copy(),
        np.asarray(PAR, np.int64),
    )


def grow_vessel_trees(
    anatomy: ChestAnatomy,
    pmap: PlanningMap,
    rng: np.random.Generator,
    r_min: float = 2.0,
    step: float = 3.0,
) -> Segments:
    """Arterial, venous and bronchial trees of both lungs.

    Args:
        anatomy: the patient's anatomy (hilum positions in ``anatomy.params``).
        pmap: planning map (lung labels).
        rng: generator (consumed).
        r_min: radius (mm) below which a branch ends with a thin twig (2.0: calibrated on real
            chest CT, issue 11; 0.7 before, three times the real dense fraction).
        step: spacing (mm) of the territory points (one per coarse lung voxel, jittered).

    Returns:
        All segments (arteries, veins, bronchi) as one :class:`Segments`.
    """
    p = anatomy.params
    parts = []
    for side, sx, lab in (("right", -1.0, LABEL_LUNG_R), ("left", 1.0, LABEL_LUNG_L)):
        vox = np.argwhere(pmap.label == lab)
        if len(vox) < 10:
            continue
        base = np.asarray(pmap.grid.start) + vox * pmap.step
        h = np.asarray(p.artery_hila[side], float)
        r_tot = rng.uniform(7.0, 8.5)
        dirs = [(0.8, 0.1, sx * 0.6), (-0.25, -0.6, sx * 0.75), (-0.75, 0.45, sx * 0.5)]
        art_roots = [(h, d, r_tot) for d in dirs]
        pts = base + rng.uniform(-0.5, 0.5, base.shape) * pmap.step
        pts = pts[rng.random(len(pts)) < 0.5]
        art = _grow_tree(art_roots, pts, pmap, rng, lab, KIND_ARTERY, r_min)
        up, low = p.vein_hila[side]
        r_v = rng.uniform(6.5, 8.0)
        vein_roots = [(up, (0.6, -0.3, sx * 0.75), r_v), (low, (-0.6, 0.45, sx * 0.65), r_v)]
        pts = base + rng.uniform(-0.5, 0.5, base.shape) * pmap.step
        pts = pts[rng.random(len(pts)) < 0.5]
        vein = _grow_tree(vein_roots, pts, pmap, rng, lab, KIND_VEIN, r_min)
        br = _bronchi_from_arteries(
            art, p.bronchus_hila[side], p.main_bronchus_radius[side], min_radius=1.6
        )
        parts += [art, vein, br]
    return Segments.concat(parts)


_BUCKETS = np.array(
    [
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        10,
        12,
        16,
        20,
        24,
        32,
        40,
        48,
        64,
        80,
        96,
        128,
        160,
        192,
        256,
        320,
        384,
        512,
        640,
        768,
        1024,
        2048,
    ]
)


def _scatter_max(flat_out: np.ndarray, idx: np.ndarray, val: np.ndarray) -> None:
    """``flat_out[idx] = max(flat_out[idx], val)`` with repeated indices (largest value wins)."""
    o = np.argsort(val, kind="stable")
    idx, val = idx[o], val[o]
    flat_out[idx] = np.maximum(flat_out[idx], val)


def occupancy_max(
    cv: Canvas,
    segs: Segments,
    sel: np.ndarray,
    out: np.ndarray,
    radius_scale: float = 1.0,
    max_elems: int = 1_500_000,
) -> None:
    """Max-combine the soft occupancy of segments ``sel`` into ``out`` (sub-slice grid of ``cv``).

    Segments are grouped by the size of their voxel bounding boxes and evaluated in vectorised
    batches (one array per batch), so thousands of small vessels cost a few array passes.

    Args:
        cv: canvas (coordinates; ``out`` has shape ``(nz * n_sub, ny, nx)``).
        segs: all segments; ``sel``: indices of those to render.
        out: float32 occupancy, updated in place.
        radius_scale: multiply radii (e.g. 0.65 for a bronchial lumen).
    """
    if len(sel) == 0:
        return
    nzs, ny, nx = out.shape
    w = float(max(cv.spacing[1], cv.spacing[2]))
    dzs = cv.spacing[0] / cv.n_sub
    a, b = segs.a[sel], segs.b[sel]
    ra, rb = segs.ra[sel] * radius_scale, segs.rb[sel] * radius_scale
    rmax = np.maximum(ra, rb) + 0.5 * w
    lo = np.minimum(a, b) - rmax[:, None]
    hi = np.maximum(a, b) + rmax[:, None]
    starts = (cv.zsub[0], cv.y[0], cv.x[0])
    steps = (dzs, cv.spacing[1], cv.spacing[2])
    sizes = (nzs, ny, nx)
    i0, i1 = [], []
    for k in range(3):
        i0.append(np.clip(np.ceil((lo[:, k] - starts[k]) / steps[k]).astype(np.int64), 0, sizes[k]))
        i1.append(
            np.clip(np.floor((hi[:, k] - starts[k]) / steps[k]).astype(np.int64) + 1, 0, sizes[k])
        )
    dims = np.stack([i1[k] - i0[k] for k in range(3)], axis=1)
    ok = np.all(dims > 0, axis=1)
    if not ok.any():
        return
    cls = np.searchsorted(_BUCKETS, dims[ok])  # bucket index per axis
    keys = cls[:, 0] * 10000 + cls[:, 1] * 100 + cls[:, 2]
    okidx = np.flatnonzero(ok)
    flat_out = out.reshape(-1)
    ycoord = cv.y.astype(np.float32)
    xcoord = cv.x.astype(np.float32)
    zcoord = cv.zsub.astype(np.float32)
    for key in np.unique(keys):
        members = okidx[keys == key]
        bz, by, bx = (int(_BUCKETS[c]) for c in cls[np.flatnonzero(keys == key)[0]])
        per = bz * by * bx
        step = max(1, max_elems // per)
        for s0 in range(0, len(members), step):
            mm = members[s0 : s0 + step]
            kk = np.minimum(i0[0][mm, None] + np.arange(bz), nzs - 1)
            jj = np.minimum(i0[1][mm, None] + np.arange(by), ny - 1)
            ii = np.minimum(i0[2][mm, None] + np.arange(bx), nx - 1)
            Z = zcoord[kk][:, :, None, None]
            Y = ycoord[jj][:, None, :, None]
            X = xcoord[ii][:, None, None, :]
            d = segment_depth_batch(Z, Y, X, a[mm], b[mm], ra[mm], rb[mm])
            occ = np.clip(0.5 + d * np.float32(1.0 / w), 0.0, 1.0)
            flat = (kk[:, :, None, None] * ny + jj[:, None, :, None]) * nx + ii[:, None, None, :]
            pos = occ > 0
            _scatter_max(flat_out, flat[pos], occ[pos])


def render_segments(
    cv: Canvas, segs: Segments, blood_hu: float, wall_hu: float, air_hu: float = -1000.0
) -> None:
    """Blend vessels (blood) and bronchi (wall + air lumen) into the canvas HU, with partial volume.

    Occupancy is the union (max) over segments on ``cv.n_sub`` samples per slice with a soft
    in-plane edge, averaged over each slice; it only replaces lung parenchyma and mediastinal fat
    (never bone, heart or chest wall). Labels are not changed (vessels inside a lung belong to
    that lung in the ground truth).
    """
    if len(segs) == 0:
        return
    zlo = cv.z[0] - cv.spacing[0]
    zhi = cv.z[-1] + cv.spacing[0]
    rmax = np.maximum(segs.ra, segs.rb)
    near = (np.maximum(segs.a[:, 0], segs.b[:, 0]) + rmax >= zlo) & (
        np.minimum(segs.a[:, 0], segs.b[:, 0]) - rmax <= zhi
    )
    allowed_labels = np.zeros(256, bool)
    allowed_labels[[LABEL_LUNG_R, LABEL_LUNG_L, LABEL_MEDIASTINUM]] = True
    allowed = allowed_labels[cv.label]
    hu = cv.hu
    sub_shape = (cv.shape[0] * cv.n_sub, cv.shape[1], cv.shape[2])
    for sel, value, scale in (
        (np.flatnonzero(near & (segs.kind != KIND_BRONCHUS)), blood_hu, 1.0),
        (np.flatnonzero(near & (segs.kind == KIND_BRONCHUS)), wall_hu, 1.0),
        (np.flatnonzero(near & (segs.kind == KIND_BRONCHUS)), air_hu, 0.65),
    ):
        if len(sel) == 0:
            continue
        occ = np.zeros(sub_shape, np.float32)
        occupancy_max(cv, segs, sel, occ, radius_scale=scale)
        f = cv.reduce_sub(occ)
        f *= allowed
        hu += f * (np.float32(value) - hu)
