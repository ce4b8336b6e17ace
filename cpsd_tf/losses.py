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
    """The student's loss: w_cls·ASL(y, s) + Σ_t w_teacher·‖s − teacher_t‖² (paper §3.3, Eq. 4).

    `y_true` packs the labels and the teachers' merged logits side by side, [B, (1 + T)·m]:
    `[y | teacher_1 | … | teacher_T]`, so the cached teacher logits travel with the batch through the
    ordinary Keras `fit` (no custom training step). `y_pred` is the student's logits [B, m].

    Args:
        num_classes: int, m.
        num_teachers: int, T ≥ 0 teacher sets (2 for CPSD).
        w_cls: float, weight of the ASL term. Defaults to 0.5 (official code).
        w_teacher: float, weight of each teacher's squared-error term. Defaults to 0.25 (official code).
        mse: str, "sum" over classes (official) or "mean" over classes. Defaults to "sum".
        asl: dict, `AsymmetricLoss` arguments. Defaults to None (its defaults).

    Example:
        loss = DistillationLoss(num_classes=80, num_teachers=2)
        loss(tf.concat([y, cgp_logits, dgp_logits], -1), student_logits)
    """

    def __init__(self, num_classes, num_teachers, w_cls=0.5, w_teacher=0.25, mse="sum", asl=None,
                 reduction="sum_over_batch_size", name="distillation_loss"):
        if mse not in ("sum", "mean"):
            raise ValueError(f"DistillationLoss: mse must be 'sum' or 'mean'. Received: mse={mse!r}")
        if int(num_classes) < 1 or int(num_teachers) < 0:
            raise ValueError(f"DistillationLoss: need num_classes >= 1 and num_teachers >= 0, received {num_classes}, {num_teachers}")
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.num_classes = int(num_classes)
        self.num_teachers = int(num_teachers)
        self.w_cls = float(w_cls)
        self.w_teacher = float(w_teacher)
        self.mse = mse
        self.asl_config = dict(asl or {})
        self.asl = AsymmetricLoss(**self.asl_config)

    def call(self, y_true, y_pred):
        m = self.num_classes
        y_true = ops.cast(y_true, "float32")
        logits = ops.cast(y_pred, "float32")
        loss = self.w_cls * self.asl.call(y_true[:, :m], logits)
        for t in range(self.num_teachers):
            target = y_true[:, (t + 1) * m:(t + 2) * m]
            sq = ops.sum(ops.square(logits - target), axis=-1)
            loss = loss + self.w_teacher * (sq / m if self.mse == "mean" else sq)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_teachers=self.num_teachers, w_cls=self.w_cls,
                      w_teacher=self.w_teacher, mse=self.mse, asl=self.asl_config)
        return config
