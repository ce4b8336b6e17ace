"""Losses: the Asymmetric Loss (ASL, Ridnik et al., ICCV 2021) used by baseline, teachers and student.

The official PyTorch ASL returns `-loss.sum()` over batch *and* classes. A Keras loss instead returns one
value per example, which `reduction` then aggregates. `AsymmetricLoss.call` returns, per example, the sum
over classes (as the official code); with the default `reduction="sum_over_batch_size"` Keras then takes
the mean over the batch. So

    official_asl(x, y) == AsymmetricLoss(reduction="sum")(y, x)
    official_asl(x, y) / batch_size == AsymmetricLoss()(y, x)

The batch mean keeps the learning rate independent of the batch size; the sum over classes keeps the
paper's scale per image (pass `normalize=True` for the per-class mean instead).
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cpsd_tf")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric Loss on logits, summed over classes, computed in float32.

    With p = sigmoid(x), the shifted negative probability p_- = min(1 - p + clip, 1) (only when
    clip > 0, else p_- = 1 - p), p_t = y·p + (1 - y)·p_- and γ = γ+·y + γ-·(1 - y), each example's loss is

        -Σ_classes [y·log(max(p, eps)) + (1 - y)·log(max(p_-, eps))] · max(1 - p_t, eps)^γ

    exactly the official ASL with `disable_torch_grad_focal_loss=True`: the focusing weight
    max(1 - p_t, eps)^γ is a constant for back-propagation (`stop_gradient`). Its base is kept ≥ eps
    because d/dx (1 - p_t)^0 is 0·0^-1 = NaN once the sigmoid saturates; the clamp changes the weight
    only where (1 - p_t) < eps, where the weighted term is already ~0. log(p) and, without clip,
    log(1 - p) use `log_sigmoid`, so logits of ±1e4 give finite values and gradients (same values as
    the official clamped logs, without the float32 round-off of `log(sigmoid(x))`).

    Logits and labels are cast to float32 first, so the loss is safe under a `mixed_float16` policy
    (fp16 ASL is known to produce NaN). Labels may be soft (in [0, 1]); the formula is then applied
    as written, like the official code.

    Args:
        gamma_neg: float, γ- ≥ 0, focusing exponent of the negatives. Defaults to 4 (ASL default, used
            by the paper).
        gamma_pos: float, γ+ ≥ 0, focusing exponent of the positives. Defaults to 0.
        clip: float in [0, 1), the probability margin μ of the negatives (p_- = min(1 - p + clip, 1),
            i.e. negatives with p < clip cost nothing). 0 disables it. Defaults to 0.05.
        eps: float > 0, lower clamp of the probabilities inside the logs and of the focusing base.
            Defaults to 1e-8.
        normalize: bool, divide each example's sum by the number of classes (a per-class mean; not in
            the official code, which sums). Defaults to False.
        reduction: Keras reduction over the per-example values. Defaults to "sum_over_batch_size"
            (batch mean); "sum" reproduces the official ASL value.
        name: str, name of the loss. Defaults to "asymmetric_loss".

    Example:
        >>> loss = AsymmetricLoss()
        >>> float(loss([[1.0, 0.0]], [[2.0, -1.0]]))  # doctest: +ELLIPSIS
        0.127...
    """

    def __init__(
        self,
        gamma_neg=4.0,
        gamma_pos=0.0,
        clip=0.05,
        eps=1e-8,
        normalize=False,
        reduction="sum_over_batch_size",
        name="asymmetric_loss",
    ):
        if gamma_neg < 0 or gamma_pos < 0:
            raise ValueError(
                f"AsymmetricLoss: gamma_neg and gamma_pos must be >= 0. "
                f"Received: gamma_neg={gamma_neg}, gamma_pos={gamma_pos}"
            )
        if clip is None:  # the official code accepts clip=None for "no clipping"
            clip = 0.0
        if not 0 <= clip < 1:
            raise ValueError(f"AsymmetricLoss: clip must be in [0, 1). Received: clip={clip}")
        if not eps > 0:
            raise ValueError(f"AsymmetricLoss: eps must be > 0. Received: eps={eps}")
        # float32 whatever the global policy or floatx: the base class casts both inputs to it.
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = float(clip)
        self.eps = float(eps)
        self.normalize = bool(normalize)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        y = ops.cast(y_true, "float32")
        _check_same_last_dim(y, logits)
        log_eps = math.log(self.eps)

        # log(max(p, eps)) == max(log p, log eps): the same clamp, computed stably.
        log_p = ops.maximum(ops.log_sigmoid(logits), log_eps)
        one_minus_p = ops.sigmoid(-logits)  # accurate 1 - p in both tails
        if self.clip > 0:
            p_neg = ops.minimum(one_minus_p + self.clip, 1.0)  # >= clip, so the log is safe
            log_p_neg = ops.log(ops.maximum(p_neg, self.eps))
            one_minus_p_neg = ops.maximum(ops.sigmoid(logits) - self.clip, 0.0)
        else:
            log_p_neg = ops.maximum(ops.log_sigmoid(-logits), log_eps)
            one_minus_p_neg = ops.sigmoid(logits)
        loss = y * log_p + (1.0 - y) * log_p_neg

        if self.gamma_neg > 0 or self.gamma_pos > 0:
            # 1 - p_t = y(1 - p) + (1 - y)(1 - p_-), algebraically the official 1 - (p·y + p_-·(1 - y)).
            base = y * one_minus_p + (1.0 - y) * one_minus_p_neg
            gamma = self.gamma_pos * y + self.gamma_neg * (1.0 - y)
            weight = ops.power(ops.maximum(base, self.eps), gamma)
            loss = loss * ops.stop_gradient(weight)

        per_example = -ops.sum(loss, axis=-1)
        if self.normalize:
            per_example = per_example / ops.cast(ops.shape(logits)[-1], "float32")
        return per_example

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "gamma_neg": self.gamma_neg,
                "gamma_pos": self.gamma_pos,
                "clip": self.clip,
                "eps": self.eps,
                "normalize": self.normalize,
            }
        )
        return config


def sum_squared_error(y_true, y_pred):
    """Per-example Σ_classes (y_pred - y_true)², in float32 — the distillation term ‖ŷs − ŷt‖².

    No 1/2 and no batch reduction: the caller weighs it (paper ½, official code 0.25) and averages
    over the batch like the other terms.

    Args:
        y_true: teacher logits [batch, m].
        y_pred: student logits [batch, m].

    Example:
        >>> float(sum_squared_error([[0.0, 1.0]], [[1.0, 3.0]])[0])
        5.0
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    _check_same_last_dim(y_true, y_pred)
    return ops.sum(ops.square(y_pred - y_true), axis=-1)


def _check_same_last_dim(y_true, y_pred):
    # Broadcasting [B, 1] labels against [B, m] logits would silently give a wrong loss.
    a, b = y_true.shape[-1], y_pred.shape[-1]
    if a is not None and b is not None and a != b:
        raise ValueError(
            f"labels and logits must have the same number of classes (last axis). "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )


@keras.saving.register_keras_serializable(package="cpsd_tf")
class DistillationLoss(keras.losses.Loss):
    """The student's loss: w_cls·ASL(y, s) + Σ_t w_t·‖s − teacher_t‖² (paper §3.3, Eq. 4–7).

    The official code's CPSD loss is 0.5·ASL + (α/2)·SSE_cgp + (0.5 − α/2)·SSE_dgp with α = 0.5 and the
    squared error summed over classes: `w_cls=0.5, w_teachers=[0.25, 0.25], mse="sum"` (the defaults,
    see `distill_weights`). `y_true` packs the labels and the teachers' merged logits side by side,
    [B, (1 + T)·m]: `[y | teacher_1 | … | teacher_T]`, so teacher targets travel with the batch through
    the ordinary Keras `fit`. `y_pred` is the student's logits [B, m].

    Args:
        num_classes: int, m.
        w_teachers: list of float, weight of each teacher set's squared-error term (T = its length).
            Defaults to (0.25, 0.25) (official CPSD).
        w_cls: float, weight of the ASL term. Defaults to 0.5 (official code).
        mse: str, "sum" over classes (official) or "mean" over classes. Defaults to "sum".
        asl: dict, `AsymmetricLoss` arguments. Defaults to None (its defaults).

    Example:
        loss = DistillationLoss(num_classes=80, w_teachers=[0.25, 0.25])
        loss(tf.concat([y, cgp_logits, dgp_logits], -1), student_logits)
    """

    def __init__(self, num_classes, w_teachers=(0.25, 0.25), w_cls=0.5, mse="sum", asl=None,
                 reduction="sum_over_batch_size", name="distillation_loss"):
        if mse not in ("sum", "mean"):
            raise ValueError(f"DistillationLoss: mse must be 'sum' or 'mean'. Received: mse={mse!r}")
        w_teachers = [float(w) for w in w_teachers]
        if int(num_classes) < 1 or any(w < 0 for w in w_teachers) or w_cls < 0:
            raise ValueError(f"DistillationLoss: need num_classes >= 1 and weights >= 0, received "
                             f"{num_classes}, w_cls={w_cls}, w_teachers={w_teachers}")
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.num_classes = int(num_classes)
        self.w_teachers = w_teachers
        self.w_cls = float(w_cls)
        self.mse = mse
        self.asl_config = dict(asl or {})
        self.asl = AsymmetricLoss(**self.asl_config)

    @property
    def num_teachers(self):
        return len(self.w_teachers)

    def terms(self, y_true, y_pred):
        """Per-example terms {"asl": …, "teacher_0": …}, unweighted, for logging."""
        m = self.num_classes
        y_true = ops.cast(y_true, "float32")
        logits = ops.cast(y_pred, "float32")
        out = {"asl": self.asl.call(y_true[:, :m], logits)}
        for t in range(self.num_teachers):
            sq = ops.sum(ops.square(logits - y_true[:, (t + 1) * m:(t + 2) * m]), axis=-1)
            out[f"teacher_{t}"] = sq / m if self.mse == "mean" else sq
        return out

    def weighted_terms(self, y_true, y_pred):
        """Per-example terms as they enter the loss, {"asl": w_cls·ASL, "teacher_0": w_0·SE_0, …}.

        They sum to `call`'s per-example loss (up to float round-off), so their batch means sum to the loss.
        """
        terms = self.terms(y_true, y_pred)
        out = {"asl": self.w_cls * terms["asl"]}
        for t, w in enumerate(self.w_teachers):
            out[f"teacher_{t}"] = w * terms[f"teacher_{t}"]
        return out

    def call(self, y_true, y_pred):
        terms = self.terms(y_true, y_pred)
        loss = self.w_cls * terms["asl"]
        for t, w in enumerate(self.w_teachers):
            loss = loss + w * terms[f"teacher_{t}"]
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, w_teachers=self.w_teachers, w_cls=self.w_cls, mse=self.mse,
                      asl=self.asl_config)
        return config


def distill_weights(teacher_sets, w_distill=0.5, alpha=0.5):
    """Per-set weights of the distillation terms: the total `w_distill` split over the sets.

    CGP and DGP together get α·w and (1 − α)·w (official: α = 0.5, w = 0.5, so 0.25 each); any other
    list shares w equally, so a single-set ablation (CGPD, DGPD, SD, random) puts the whole w on its set
    and every variant gets the same total distillation weight.

    Example:
        >>> distill_weights(["cgp", "dgp"]), distill_weights(["dgp"])
        ([0.25, 0.25], [0.5])
    """
    sets = list(teacher_sets)
    if sorted(sets) == ["cgp", "dgp"]:
        return [alpha * w_distill if s == "cgp" else (1.0 - alpha) * w_distill for s in sets]
    return [w_distill / len(sets)] * len(sets)
