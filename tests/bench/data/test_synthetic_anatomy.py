"""The chest renderer: determinism, and that every finding leaves a measurable signature.

Measurements are taken on the rendered pixels with simple image analysis written
here (runs of bright/dark pixels, regional means), not by reading the renderer's
own masks; the anatomy returned by `render_scene` is only used to know where to look.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.labels import NIH14
from bench.data.synthetic.anatomy import (
    PAINTS,
    RENDERABLE,
    RESHAPES,
    Anatomy,
    SiteStyle,
    render,
    render_scene,
    sample_anatomy,
)

CLEAN = SiteStyle(name="clean", noise=0.0, blur=0.0)
H = W = 128
SEEDS = range(6)


def scene(labels: dict[str, bool], seed: int, view: str = "PA") -> tuple[np.ndarray, Anatomy]:
    return render_scene(labels, np.random.default_rng(seed), CLEAN, H, W, view=view)


def col(x: float) -> int:
    """Image column of a horizontal coordinate in height units (see anatomy module doc)."""
    return int(round(x * H + W / 2.0 - 0.5))


def row(y: float) -> int:
    return int(round(y * H - 0.5))


def thorax_hw(anat: Anatomy) -> float:
    return anat.thorax_frac * min(0.5, W / (2.0 * H))


def image_ctr(img: np.ndarray, anat: Anatomy) -> float:
    """Cardiothoracic ratio measured on the image.

    For each row through the heart: the bright run containing the midline (heart +
    mediastinum) against the inner thoracic width, the gap between the two chest-wall
    runs (first and last bright runs of the row); the ratio at the row where the
    central bright run is widest.
    """
    best_heart, best_thorax = 0, 1
    mid = col(anat.cx)
    for r in range(row(anat.heart_cy - 0.04), row(anat.heart_cy + 0.03)):  # above the domes
        line = img[r]
        bright = line > 0.40
        left = mid
        while left > 0 and bright[left - 1]:
            left -= 1
        right = mid
        while right < W - 1 and bright[right + 1]:
            right += 1
        padded = np.concatenate([[0], bright.astype(int), [0]])
        starts = np.flatnonzero(np.diff(padded) == 1)  # first pixel of each bright run
        ends = np.flatnonzero(np.diff(padded) == -1) - 1  # last pixel of each bright run
        if starts.size < 3:
            continue
        wall_left_end, wall_right_start = ends[0], starts[-1]  # inner edges of the chest walls
        if right - left + 1 > best_heart:
            best_heart, best_thorax = right - left + 1, wall_right_start - wall_left_end - 1
    return best_heart / best_thorax


def region_mean(img: np.ndarray, y0: float, y1: float, x0: float, x1: float) -> float:
    return float(img[row(y0) : row(y1) + 1, col(x0) : col(x1) + 1].mean())


def test_same_seed_same_image_and_different_seed_differs() -> None:
    a = render({"Mass": True}, np.random.default_rng(7), CLEAN, 96, 80)
    b = render({"Mass": True}, np.random.default_rng(7), CLEAN, 96, 80)
    c = render({"Mass": True}, np.random.default_rng(8), CLEAN, 96, 80)
    assert a.shape == (96, 80)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_air_is_dark_and_body_bright() -> None:
    img, anat = scene({}, 0)
    corner = img[:4, :4].mean()  # air above the shoulders
    abdomen = region_mean(img, 0.9, 0.97, anat.cx - 0.1, anat.cx + 0.1)
    lung = region_mean(img, 0.35, 0.45, anat.cx - 0.7 * thorax_hw(anat), anat.cx - 0.5 * thorax_hw(anat))
    assert corner < 0.05 < lung < abdomen


def test_every_finding_has_a_signature_function() -> None:
    assert set(NIH14) <= set(RENDERABLE)
    for name in RENDERABLE:
        assert name in RESHAPES or name in PAINTS, name


@pytest.mark.parametrize("name", RENDERABLE)
def test_every_finding_changes_the_image_of_the_same_patient(name: str) -> None:
    base, _ = scene({}, 3)
    img, _ = scene({name: True}, 3)
    assert np.abs(img - base).max() > 0.1


def test_other_findings_do_not_depend_on_one_being_present() -> None:
    """Adding Nodule leaves the mass (and everything far from the nodule) unchanged."""
    with_mass, _ = scene({"Mass": True}, 11)
    both, _ = scene({"Mass": True, "Nodule": True}, 11)
    only_nodule, _ = scene({"Nodule": True}, 11)
    base, _ = scene({}, 11)
    nodule_area = np.abs(only_nodule - base) > 1e-9
    assert np.array_equal(both[~nodule_area], with_mass[~nodule_area])


@pytest.mark.parametrize("seed", SEEDS)
def test_cardiomegaly_enlarges_the_heart_beyond_ctr_half(seed: int) -> None:
    normal, anat_n = scene({}, seed)
    big, anat_b = scene({"Cardiomegaly": True}, seed)
    assert anat_n.ctr < 0.5 < anat_b.ctr
    ctr_normal, ctr_big = image_ctr(normal, anat_n), image_ctr(big, anat_b)
    assert ctr_normal < 0.5 < ctr_big
    assert abs(ctr_big - anat_b.ctr) < 0.08  # the measured ratio tracks the drawn one


@pytest.mark.parametrize("seed", SEEDS)
def test_effusion_raises_basal_lung_intensity(seed: int) -> None:
    normal, anat = scene({}, seed)
    wet, _ = scene({"Pleural Effusion": True}, seed)
    t = thorax_hw(anat)
    gains = []
    for sign, dia in ((-1, anat.dia_r), (1, anat.dia_l)):
        # the costophrenic angle: lateral, just above the (lowest, lateral) end of the dome
        x0, x1 = sorted((anat.cx + sign * 0.8 * t, anat.cx + sign * 0.92 * t))
        gains.append(region_mean(wet, dia - 0.07, dia - 0.035, x0, x1) - region_mean(normal, dia - 0.07, dia - 0.035, x0, x1))
    assert max(gains) > 0.1  # at least one costophrenic angle is opacified
    upper = region_mean(wet, 0.2, 0.3, anat.cx - 0.8 * t, anat.cx + 0.8 * t) - region_mean(
        normal, 0.2, 0.3, anat.cx - 0.8 * t, anat.cx + 0.8 * t
    )
    assert upper < 0.02  # the meniscus stays basal


@pytest.mark.parametrize("seed", SEEDS)
def test_edema_is_bilateral_perihilar(seed: int) -> None:
    normal, anat = scene({}, seed)
    edema, _ = scene({"Edema": True}, seed)
    t = thorax_hw(anat)
    for sign in (-1, 1):
        x0, x1 = sorted((anat.cx + sign * 0.3 * t, anat.cx + sign * 0.5 * t))
        assert region_mean(edema, 0.38, 0.48, x0, x1) - region_mean(normal, 0.38, 0.48, x0, x1) > 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_pneumothorax_rim_is_darker_than_lung(seed: int) -> None:
    normal, _ = scene({}, seed)
    ptx, anat = scene({"Pneumothorax": True}, seed)
    t = thorax_hw(anat)
    side = -1 if anat.collapse_r else 1
    x0, x1 = sorted((anat.cx + side * 0.9 * t, anat.cx + side * 0.96 * t))
    assert region_mean(ptx, 0.4, 0.55, x0, x1) < region_mean(normal, 0.4, 0.55, x0, x1) - 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_mass_is_larger_than_nodule(seed: int) -> None:
    base, _ = scene({}, seed)
    nod, _ = scene({"Nodule": True}, seed)
    mass, _ = scene({"Mass": True}, seed)
    area_nodule = int((nod - base > 0.15).sum())
    area_mass = int((mass - base > 0.15).sum())
    assert 0 < area_nodule < area_mass


@pytest.mark.parametrize("seed", SEEDS)
def test_emphysema_darkens_lungs_and_atelectasis_loses_volume(seed: int) -> None:
    base, anat = scene({}, seed)
    emph, _ = scene({"Emphysema": True}, seed)
    atel, anat_a = scene({"Atelectasis": True}, seed)
    t = thorax_hw(anat)
    lungs = (slice(row(0.3), row(0.6)), slice(col(anat.cx - 0.9 * t), col(anat.cx + 0.9 * t)))
    assert emph[lungs].mean() < base[lungs].mean() - 0.02
    assert min(anat_a.dia_r, anat_a.dia_l) < min(anat.dia_r, anat.dia_l) - 0.03
    assert (atel < 0.3).sum() < (base < 0.3).sum()  # less aerated lung


def test_ap_view_magnifies_heart_and_lateral_view_differs() -> None:
    pa, anat = scene({}, 4, "PA")
    ap, _ = scene({}, 4, "AP")
    ll, _ = scene({}, 4, "LL")
    assert image_ctr(ap, anat) > image_ctr(pa, anat)
    assert np.abs(ll - pa).mean() > 0.05


def test_anatomy_can_be_fixed_for_follow_ups() -> None:
    anat = sample_anatomy(np.random.default_rng(0))
    a = render({}, np.random.default_rng(1), CLEAN, H, W, anatomy=anat)
    b = render({}, np.random.default_rng(2), CLEAN, H, W, anatomy=anat)
    other = render({}, np.random.default_rng(1), CLEAN, H, W)
    assert np.abs(a - b).mean() < np.abs(a - other).mean()


def test_style_noise_blur_and_sizes() -> None:
    rng = np.random.default_rng(0)
    noisy = render({}, np.random.default_rng(5), SiteStyle("n", noise=0.05), H, W)
    clean = render({}, np.random.default_rng(5), CLEAN, H, W)
    assert 0.03 < float(np.std(noisy - clean)) < 0.06
    blurred = render({}, np.random.default_rng(5), SiteStyle("b", noise=0.0, blur=1.5), H, W)
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(clean, axis=1)).mean()
    style = SiteStyle("s", base_size=(140, 140), aspect_range=(0.8, 1.1), size_jitter=0.1)
    for _ in range(50):
        h, w = style.image_size(rng)
        assert 126 <= h <= 154 and 0.8 * h - 1 <= w <= 1.1 * h + 1


def test_label_sampling_keeps_marginals_and_couples_findings() -> None:
    style = SiteStyle("p", prevalence={"Edema": 0.2, "Cardiomegaly": 0.3, "Hernia": 0.0}, correlation=0.5)
    rng = np.random.default_rng(0)
    draws = [style.sample_labels(rng) for _ in range(4000)]
    edema = np.array([d["Edema"] for d in draws], dtype=float)
    cardio = np.array([d["Cardiomegaly"] for d in draws], dtype=float)
    assert abs(edema.mean() - 0.2) < 3 * np.sqrt(0.2 * 0.8 / 4000)
    assert abs(cardio.mean() - 0.3) < 3 * np.sqrt(0.3 * 0.7 / 4000)
    assert not any(d["Hernia"] for d in draws)
    assert np.corrcoef(edema, cardio)[0, 1] > 0.1
    floored = [style.sample_labels(rng, floor=0.05)["Hernia"] for _ in range(2000)]
    assert 0.03 < np.mean(floored) < 0.07


def test_unknown_label_or_view_is_rejected() -> None:
    with pytest.raises(ValueError, match="Effusion"):
        render({"Effusion": True}, np.random.default_rng(0), CLEAN, H, W)  # NIH spelling, not canonical
    with pytest.raises(ValueError, match="view"):
        render({}, np.random.default_rng(0), CLEAN, H, W, view="LATERAL")


@pytest.mark.parametrize("name", ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"])
def test_harmonised_findings_are_learnable_from_small_thumbnails(name: str) -> None:
    """Logistic regression on 32x32 thumbnails of NIH-style images (noise, blur, random
    patients and views) separates positives from negatives on held-out patients."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from bench.data.synthetic.nih import STYLE

    rng = np.random.default_rng(42)
    x, y = [], []
    for i in range(120):
        positive = i % 2 == 0
        view = "AP" if rng.random() < STYLE.ap_fraction else "PA"
        img = render({name: positive}, np.random.default_rng(1000 + i), STYLE, 64, 64, view=view)
        thumb = np.asarray(Image.fromarray((img * 255).astype(np.uint8)).resize((32, 32)), dtype=float) / 255.0
        x.append(thumb.ravel())
        y.append(positive)
    x, y = np.array(x), np.array(y)
    model = LogisticRegression(C=0.1, max_iter=2000).fit(x[:80], y[:80])
    auc = roc_auc_score(y[80:], model.predict_proba(x[80:])[:, 1])
    assert auc > 0.75


def test_zoom_magnifies_the_thorax() -> None:
    """Both lung fields together get wider on the image when the field of view tightens."""
    wide = render({}, np.random.default_rng(2), CLEAN, H, W)
    tight = render({}, np.random.default_rng(2), SiteStyle("z", noise=0.0, blur=0.0, zoom=1.15), H, W)

    def lung_span(img: np.ndarray) -> int:
        line = img[row(0.45)]
        bright = np.flatnonzero(line > 0.3)  # chest walls (and mediastinum)
        dark = np.flatnonzero(line < 0.3)
        inside = dark[(dark > bright[0]) & (dark < bright[-1])]  # lung, not the air outside
        return int(inside[-1] - inside[0] + 1)

    ratio = lung_span(tight) / lung_span(wide)
    assert 1.08 < ratio < 1.22


def _demo_thumb(img: np.ndarray) -> np.ndarray:
    """What the demo's models see: the 128-px film resized to 64 px (antialiased)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img.astype(np.float32)).resize((64, 64), Image.BILINEAR), dtype=np.float64)


@pytest.mark.parametrize("name", [n for n in RENDERABLE if n in PAINTS or n in RESHAPES])
def test_signal_zero_hides_a_finding_and_larger_signal_shows_it_more(name: str) -> None:
    """Difficulty control: at signal 0 a positive is pixel-identical to its negative; the
    trace (mean |positive - negative| at the demo's 64 px) grows with the signal."""
    from bench.data.synthetic.anatomy import finding_signal

    def trace(signal: float, seed: int) -> float:
        with finding_signal(signal):
            pos = render({name: True}, np.random.default_rng(seed), CLEAN, H, W)
            neg = render({}, np.random.default_rng(seed), CLEAN, H, W)
        return float(np.abs(_demo_thumb(pos) - _demo_thumb(neg)).mean())

    for seed in range(3):
        t = [trace(s, seed) for s in (0.0, 0.5, 1.0, 2.0)]
        assert t[0] == 0.0
        assert t[1] < t[2] < t[3], t


@pytest.mark.parametrize("name", NIH14)
def test_every_nih_finding_leaves_a_visible_trace_at_demo_resolution(name: str) -> None:
    """At the default signal, every finding the demo fine-tunes on changes the 64-px image
    the models see by more than six times the site's pixel noise (NIH style, 0.015 sd),
    in every one of several patients. Positive and negative share the seed, hence the
    patient and the noise, so the difference is the finding's trace alone."""
    from bench.data.synthetic.nih import STYLE

    for seed in range(4):
        pos = _demo_thumb(render({name: True}, np.random.default_rng(seed), STYLE, 128, 128))
        neg = _demo_thumb(render({}, np.random.default_rng(seed), STYLE, 128, 128))
        diff = np.abs(pos - neg)
        assert diff.max() > 6 * STYLE.noise, (name, seed, float(diff.max()))


@pytest.mark.slow
def test_oct_classes_are_learnable_and_signal_controls_it() -> None:
    """Balanced accuracy of a logistic regression on 16x24 OCT thumbnails (held-out scans):
    well above chance at the default signal, at chance when the signal is off."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from bench.data.synthetic.oct import CLASSES, render_oct

    def accuracy(signal: float) -> float:
        x, y = [], []
        for i in range(240):
            k = i % len(CLASSES)
            img = render_oct(CLASSES[k], np.random.default_rng(500 + i), 96, 144, signal=signal)
            x.append(np.asarray(Image.fromarray(img.astype(np.float32)).resize((24, 16), Image.BILINEAR)).ravel())
            y.append(k)
        x, y = np.array(x), np.array(y)
        model = LogisticRegression(C=0.3, max_iter=3000).fit(x[:160], y[:160])
        return float(balanced_accuracy_score(y[160:], model.predict(x[160:])))

    assert accuracy(1.0) > 0.7
    assert accuracy(0.0) < 0.45  # chance is 0.25
