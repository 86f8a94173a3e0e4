"""Plausible wrong answers to ps6_poisoning that pass the visible tests but not the hidden ones.

Each entry: name -> (solution cell replaced, the one test cell it must fail, code).
tests/test_assignments.py autogrades each and checks it loses exactly that test's points.
The visible tests compute the hinge loss of one point at a time (where the mean is the sum),
train on a data set symmetric through the origin (where the best bias is 0, so a missing or
regularized bias costs nothing), and step along a unit-norm gradient or from a point inside
the box (where normalizing and projecting change nothing); the hidden tests use several
points, data sets whose boundary is far from the origin, gradients of any norm (zero included)
and poison points on the box's faces.
The visible test of kkt_poison_gradient has the poison point as an error vector (alpha_c = U), where its
own margin condition is not in the KKT system; the hidden tests also put it on the margin (c in S), where
dropping that condition's extra term -y_c w gives a wrong gradient.
"""

WRONG_ANSWERS = {
    "bug_hinge_sum": ("hinge_loss", "test_hinge_loss", '''\
def hinge_loss(w: np.ndarray, b: float, X: np.ndarray, y: np.ndarray) -> float:
    X, y, w = np.asarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    if not np.isin(y, (-1.0, 1.0)).all():
        raise ValueError("y must hold labels in {-1, +1}")
    return float(np.maximum(0.0, 1.0 - y * (X @ w + b)).sum())  # BUG: the sum, not the mean
'''),
    "bug_svm_bias_regularized": ("train_svm", "test_train_svm", '''\
def train_svm(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    n, d = X.shape
    Xb = np.hstack([X, np.ones((n, 1))])  # BUG: the bias as an extra weight, so the ridge penalizes it too
    v = np.zeros(d + 1)
    best_obj, best = np.inf, v
    eta0 = 1.0 / np.sqrt((Xb ** 2).sum(1).max())
    for t in range(1, 2001):
        margins = y * (Xb @ v)
        obj = 0.5 * v @ v + C * np.maximum(0.0, 1.0 - margins).mean()
        if obj < best_obj:
            best_obj, best = obj, v.copy()
        inside = margins < 1.0
        g = v - C / n * (y[inside] @ Xb[inside])
        norm = np.linalg.norm(g)
        if norm == 0.0:
            break
        v = v - eta0 / np.sqrt(t) * g / norm
    return best[:d], float(best[d])
'''),
    "bug_svm_no_bias": ("train_svm", "test_train_svm", '''\
def train_svm(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    n, d = X.shape
    w = np.zeros(d)
    best_obj, best = np.inf, w
    eta0 = 1.0 / np.sqrt((X ** 2).sum(1).max() + 1.0)
    for t in range(1, 2001):
        margins = y * (X @ w)  # BUG: no bias at all: the boundary must pass through the origin
        obj = 0.5 * w @ w + C * np.maximum(0.0, 1.0 - margins).mean()
        if obj < best_obj:
            best_obj, best = obj, w.copy()
        inside = margins < 1.0
        g_w = w - C / n * (y[inside] @ X[inside])
        norm = np.linalg.norm(g_w)
        if norm == 0.0:
            break
        w = w - eta0 / np.sqrt(t) * g_w / norm
    return best, 0.0
'''),
    "bug_kkt_poison_margin_term": ("kkt_poison_gradient", "test_kkt_poison_gradient", '''\
def kkt_poison_gradient(X, y, alpha, w, b, C, X_val, y_val):
    X, y, alpha, w = (np.asarray(a, dtype=float) for a in (X, y, alpha, w))
    X_val, y_val = np.asarray(X_val, dtype=float), np.asarray(y_val, dtype=float)
    n, d = X.shape
    c = n - 1
    act = y_val * (X_val @ w + b) < 1.0
    g_w = -(y_val[act] @ X_val[act]) / len(y_val)
    g_b = -y_val[act].sum() / len(y_val)
    S = poisoning.support_sets(alpha, C).margin
    XS, yS, k = X[S], y[S], len(S)
    A = np.zeros((k + 1, k + 1))
    A[:k, :k] = np.outer(yS, yS) * (XS @ XS.T)
    A[:k, k] = A[k, :k] = yS
    R = np.zeros((k + 1, d))
    R[:k] = -alpha[c] * y[c] * yS[:, None] * XS  # BUG: no -y_c w row when the poison point is itself a margin SV
    J = np.linalg.lstsq(A, R, rcond=None)[0]
    dw = XS.T @ (yS[:, None] * J[:k]) + alpha[c] * y[c] * np.eye(d)
    return dw.T @ g_w + J[k] * g_b
'''),
    "bug_step_no_projection": ("poison_step", "test_poison_step", '''\
def poison_step(x: np.ndarray, g: np.ndarray, step_size: float) -> np.ndarray:
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    x, g = np.asarray(x, dtype=float), np.asarray(g, dtype=float)
    norm = np.linalg.norm(g)
    if norm == 0.0:
        return x.copy()
    return x + step_size * g / norm  # BUG: no projection onto the box [0, 1]^d
'''),
    "bug_step_raw_gradient": ("poison_step", "test_poison_step", '''\
def poison_step(x: np.ndarray, g: np.ndarray, step_size: float) -> np.ndarray:
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    x, g = np.asarray(x, dtype=float), np.asarray(g, dtype=float)
    return np.clip(x + step_size * g, 0.0, 1.0)  # BUG: the raw gradient: the step's length is step_size * ||g||
'''),
    "bug_step_nan_at_zero": ("poison_step", "test_poison_step", '''\
def poison_step(x: np.ndarray, g: np.ndarray, step_size: float) -> np.ndarray:
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    x, g = np.asarray(x, dtype=float), np.asarray(g, dtype=float)
    return np.clip(x + step_size * g / np.linalg.norm(g), 0.0, 1.0)  # BUG: 0 / 0 = nan when g is zero
'''),
}
