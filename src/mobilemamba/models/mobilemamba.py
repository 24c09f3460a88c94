"""MobileMamba: blocks, the model, the variant table and one registered constructor per variant.

Exact to the published networks (parameter counts, state-dict keys, initialisation); see the spec, §3.
"""
import contextlib
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, SelectAdaptivePool2d, SqueezeExcite, is_exportable, is_scriptable
from timm.models import build_model_with_cfg, register_model, resolve_pretrained_cfg
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from timm.models._registry import generate_default_cfgs

from .checkpoint import checkpoint_filter_fn
from .layers import FFN, BN_Linear, Conv2d_BN, DWConv2d_BN_ReLU, Residual, ScaleModule, fuse_model
from .ss2d import SS2D
from .wavelet import EAGER_WAVELET, HaarTransform, haar_filters

# ----------------------------------------------------------------------------------------------- building blocks


def nearest_multiple_of_16(n: int) -> int:
    """Nearest multiple of 16; an exact tie (remainder 8) rounds up, as the reference does."""
    rem = n % 16
    return n - rem + 16 if rem >= 8 else n - rem


def channel_split(dim: int, global_ratio: float, local_ratio: float) -> tuple[int, int, int]:
    """(global, local, identity) channels of an MRFFI of width `dim` (spec §3.2)."""
    g = nearest_multiple_of_16(int(global_ratio * dim))
    l = int(local_ratio * dim)
    if g + l > dim:
        l = dim - g
    return g, l, dim - g - l


class MBWTConv2d(nn.Module):
    """WTE-Mamba: SS2D at full resolution plus a depthwise k×k conv applied to all four Haar subbands."""

    def __init__(self, dim: int, kernel_size: int, ssm_ratio: float = 2.0, d_state: int = 1,
                 scan_backend: str = "auto", wavelet_impl: str = EAGER_WAVELET):
        super().__init__()
        self.dim = dim
        # Fixed filters: persistent buffers under the published parameters' names (checkpoints load strictly), so
        # that nothing trains, freezes or expects a gradient for them; count_params() still counts them.
        self.register_buffer("wt_filter", haar_filters(dim))
        self.register_buffer("iwt_filter", haar_filters(dim))
        self.wavelet = HaarTransform(wavelet_impl)
        self.global_atten = SS2D(dim, ssm_ratio=ssm_ratio, d_state=d_state, scan_backend=scan_backend)
        self.base_scale = ScaleModule((1, dim, 1, 1), 1.0)
        self.wavelet_convs = nn.ModuleList(
            [nn.Conv2d(4 * dim, 4 * dim, kernel_size, padding="same", groups=4 * dim, bias=False)])
        self.wavelet_scale = nn.ModuleList([ScaleModule((1, 4 * dim, 1, 1), 0.1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        bands = self.wavelet.dwt(x, self.wt_filter)
        bands = self.wavelet_scale[0](self.wavelet_convs[0](bands))
        x_wavelet = self.wavelet.idwt(bands, self.iwt_filter, size)
        return self.base_scale(self.global_atten(x)) + x_wavelet


class MobileMambaModule(nn.Module):
    """MRFFI: split channels into global (WTE-Mamba), local (multi-kernel DW conv) and identity, then project."""

    def __init__(self, dim: int, global_ratio: float, local_ratio: float, kernel_size: int,
                 ssm_ratio: float = 2.0, d_state: int = 1, scan_backend: str = "auto",
                 wavelet_impl: str = EAGER_WAVELET):
        super().__init__()
        self.splits = channel_split(dim, global_ratio, local_ratio)
        g, l, _ = self.splits
        self.local_op = DWConv2d_BN_ReLU(l, kernel_size) if l > 0 else nn.Identity()
        self.global_op = (MBWTConv2d(g, kernel_size, ssm_ratio, d_state, scan_backend, wavelet_impl)
                          if g > 0 else nn.Identity())
        self.proj = nn.Sequential(nn.ReLU(), Conv2d_BN(dim, dim, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_g, x_l, x_id = torch.split(x, self.splits, dim=1)
        return self.proj(torch.cat([self.global_op(x_g), self.local_op(x_l), x_id], dim=1))


class MixerWrapper(nn.Module):
    """Holds the MRFFI as `attn` (only there for the published key names `mixer.m.attn.*`)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)


def depthwise_residual(dim: int, bn_weight_init: float) -> Residual:
    return Residual(Conv2d_BN(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=bn_weight_init))


class MobileMambaBlock(nn.Module):
    """dw → FFN → MRFFI → dw → FFN, each a residual, plus an outer skip around all of it (so a fresh block is 2x)."""

    def __init__(self, dim: int, global_ratio: float, local_ratio: float, kernel_size: int,
                 drop_path: float = 0.0, **mixer_kwargs: Any):
        super().__init__()
        self.dw0 = depthwise_residual(dim, 0.0)
        self.ffn0 = Residual(FFN(dim, 2 * dim))
        self.mixer = Residual(MixerWrapper(
            MobileMambaModule(dim, global_ratio, local_ratio, kernel_size, **mixer_kwargs)))
        self.dw1 = depthwise_residual(dim, 0.0)
        self.ffn1 = Residual(FFN(dim, 2 * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))
        return x + self.drop_path(y)


class PatchMerging(nn.Module):
    """Stride-2 downsampling between stages: 1x1 expand ×4 → 3x3/2 depthwise → SE → 1x1 project."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        hidden = 4 * dim
        self.conv1 = Conv2d_BN(dim, hidden)
        self.act = nn.ReLU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 2, 1, groups=hidden)
        self.se = SqueezeExcite(hidden, rd_ratio=0.25)
        self.conv3 = Conv2d_BN(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


def transition(dim: int, out_dim: int) -> list[nn.Module]:
    """The modules prepended to a stage that downsamples: [dw+FFN at `dim`, PatchMerging, dw+FFN at `out_dim`]."""
    return [
        nn.Sequential(depthwise_residual(dim, 1.0), Residual(FFN(dim, 2 * dim))),
        PatchMerging(dim, out_dim),
        nn.Sequential(depthwise_residual(out_dim, 1.0), Residual(FFN(out_dim, 2 * out_dim))),
    ]


def stem(out_dim: int, in_chans: int = 3) -> nn.Sequential:
    """Four 3x3/2 Conv+BN (×16 downsampling) with ReLU between them, none after the last."""
    dims = [in_chans, out_dim // 8, out_dim // 4, out_dim // 2, out_dim]
    layers: list[nn.Module] = []
    for i in range(4):
        layers.append(Conv2d_BN(dims[i], dims[i + 1], 3, 2, 1))
        if i < 3:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def portable_paths(scan_backend: str, wavelet_impl: str) -> tuple[str, str]:
    """The scan and Haar formulations under timm's `scriptable` / `exportable` layer flags, for 'auto' and the
    pytorch_wavelets default (whose pywt filter bank neither scripts nor exports): scriptable → the torch scan (the
    one TorchScript compiles), exportable → the chunked scan (standard ONNX operators only; the torch scan's
    float64 logcumsumexp exports as NaN), both → the conv Haar step. Explicit choices are kept."""
    if not (is_scriptable() or is_exportable()):
        return scan_backend, wavelet_impl
    if scan_backend == "auto":
        scan_backend = "torch" if is_scriptable() else "chunked"
    return scan_backend, "conv" if wavelet_impl == "pytorch_wavelets" else wavelet_impl


# --------------------------------------------------------------------------------------------------------- model


class MobileMamba(nn.Module):
    """Three-stage MobileMamba classifier. Stage outputs have strides 16, 32, 64."""

    __jit_unused_properties__ = ["stages"]

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000, global_pool: str = "avg",
                 embed_dim: Iterable[int] = (192, 384, 448), depth: Iterable[int] = (1, 2, 2),
                 global_ratio: Iterable[float] = (0.8, 0.7, 0.6), local_ratio: Iterable[float] = (0.2, 0.2, 0.3),
                 kernels: Iterable[int] = (7, 5, 3), ssm_ratio: float = 2.0, d_state: int = 1,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, distillation: bool = False,
                 scan_backend: str = "auto", wavelet_impl: str = EAGER_WAVELET,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        embed_dim, depth = tuple(embed_dim), tuple(depth)
        global_ratio, local_ratio, kernels = tuple(global_ratio), tuple(local_ratio), tuple(kernels)
        self.img_size, self.in_chans, self.embed_dim, self.depth = img_size, in_chans, embed_dim, depth
        self.num_features, self.drop_rate = embed_dim[-1], drop_rate
        self.distillation = distillation
        self.grad_checkpointing = False
        scan_backend, wavelet_impl = portable_paths(scan_backend, wavelet_impl)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.patch_embed = stem(embed_dim[0], in_chans)
            n_blocks = sum(depth)
            dpr = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]  # linspace(0, rate, n)
            mixer_kwargs = dict(ssm_ratio=ssm_ratio, d_state=d_state, scan_backend=scan_backend,
                                wavelet_impl=wavelet_impl)
            for i, (dim, n) in enumerate(zip(embed_dim, depth)):
                modules = transition(embed_dim[i - 1], dim) if i > 0 else []
                first = sum(depth[:i])
                modules += [MobileMambaBlock(dim, global_ratio[i], local_ratio[i], kernels[i], dpr[first + j],
                                             **mixer_kwargs) for j in range(n)]
                self.add_module(f"blocks{i + 1}", nn.Sequential(*modules))
            self._build_head(num_classes, global_pool)
        self.feature_info = [dict(num_chs=dim, reduction=16 * 2 ** i, module=f"blocks{i + 1}")
                             for i, dim in enumerate(embed_dim)]
        if dtype is not None:
            self.to(dtype=dtype)

    def _build_head(self, num_classes: int, global_pool: str) -> None:
        """Global pool, then BN + Linear (one per head) on the pooled width `head_hidden_size`."""
        if num_classes > 0 and not global_pool:
            raise ValueError(f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}: "
                             "the classifier takes pooled features")
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.head = BN_Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        # None without distillation: TorchScript compiles the distilled branch only where the head exists
        self.head_dist = ((BN_Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity())
                          if self.distillation else None)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.blocks1, self.blocks2, self.blocks3]

    # timm API ---------------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names the reference's optimizer factory matches (none exist): weight decay follows ndim and `.bias`."""
        return {name for name, _ in self.named_parameters() if "attention_biases" in name}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^patch_embed", blocks=[(r"^blocks(\d+)", None)])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def set_wavelet_impl(self, impl: str) -> "MobileMamba":
        """Switch every Haar step between 'pytorch_wavelets' and the equal 'conv' and 'shuffle' formulations.

        'conv' is two grouped convs per step and traces under torch.compile without graph breaks
        (pytorch_wavelets calls into pywt, which Dynamo cannot trace); 'shuffle' traces too, as reshapes and
        elementwise arithmetic the compiler can fuse (models/wavelet.py).
        """
        for m in self.modules():
            if isinstance(m, HaarTransform):
                m.set_impl(impl)
        return self

    def set_scan_backend(self, backend: str) -> "MobileMamba":
        """Use `backend` ('auto', 'torch', 'triton', 'mamba_ssm', ...) for every SS2D."""
        for m in self.modules():
            if isinstance(m, SS2D):
                m.scan_backend = backend
        return self

    def regions(self) -> list[nn.Module]:
        """The model's blocks, for regional compilation (`for m in model.regions(): m.compile()`): the stem and
        every module of every stage (transition modules and MobileMambaBlocks). Compiled one by one, modules of one
        structure and shape (the blocks of a stage) share compiled code; only the head (pool + linear) is left out."""
        return [self.patch_embed, *(m for stage in self.stages for m in stage)]

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none) on the model's device and dtype and in its mode. `global_pool`
        None keeps the pooling (a classifier on a model without pooling gets the default 'avg' back), '' removes
        it (with num_classes=0: forward returns the final feature map)."""
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        if global_pool is None and not pool and num_classes > 0:
            pool = "avg"
        like = next(self.parameters())
        with torch.device(like.device):
            self._build_head(num_classes, pool)
        for m in (self.global_pool, self.head, self.head_dist):
            if m is not None:
                m.to(dtype=like.dtype).train(self.training)

    @torch.jit.unused
    def _checkpointed_stages(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = checkpoint_seq(stage, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return self._checkpointed_stages(x)
        return self.blocks3(self.blocks2(self.blocks1(x)))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's backbone API: the outputs of the stages named by `indices` (0, 1, 2; strides 16, 32, 64)."""
        if output_fmt != "NCHW":
            raise ValueError(f"MobileMamba gives NCHW features only, got output_fmt={output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.patch_embed(x)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and self.training else stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of `indices`; the features (and a pruned head) then have its width."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        for i in range(max_index + 1, len(self.stages)):
            setattr(self, f"blocks{i + 1}", nn.Sequential())
        self.num_features = self.embed_dim[max_index]
        if prune_head:
            self.reset_classifier(0)
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        x = self.global_pool(x)
        if pre_logits:
            return x
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if self.head_dist is None:
            return self.head(x)
        out, out_dist = self.head(x), self.head_dist(x)
        if self.training and not torch.jit.is_scripting():
            return out, out_dist
        return (out + out_dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    def fuse(self) -> "MobileMamba":
        """Fold every Conv+BN, the local branch and the head's BN+Linear; returns this model, in eval mode.

        The Haar transform switches to its (equal) conv formulation, the fastest eager one (EAGER_WAVELET).
        """
        self.eval()
        fuse_model(self)
        self.set_wavelet_impl(EAGER_WAVELET)
        self.fused = True
        return self


def count_params(model: nn.Module) -> int:
    """All parameters plus the fixed Haar filters (buffers): the published counts' basis (spec §5)."""
    filters = sum(m.wt_filter.numel() + m.iwt_filter.numel() for m in model.modules() if isinstance(m, MBWTConv2d))
    return sum(p.numel() for p in model.parameters()) + filters


# ------------------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    embed_dim: tuple[int, int, int]
    depth: tuple[int, int, int]
    img_size: int
    drop_path_rate: float


VARIANTS: dict[str, Variant] = {
    "mobilemamba_t2": Variant((144, 272, 368), (1, 2, 2), 192, 0.0),
    "mobilemamba_t4": Variant((176, 368, 448), (1, 2, 2), 192, 0.0),
    "mobilemamba_s6": Variant((192, 384, 448), (1, 2, 2), 224, 0.0),
    "mobilemamba_b1": Variant((200, 376, 448), (2, 3, 2), 256, 0.03),
    "mobilemamba_b2": Variant((200, 376, 448), (2, 3, 2), 384, 0.03),
    "mobilemamba_b4": Variant((200, 376, 448), (2, 3, 2), 512, 0.03),
}


def final_feature_size(img_size: int) -> int:
    """Side of the last stage's map: the ×16 stem, then two stride-2 stages, each rounding up (pad 1, kernel 3)."""
    side = img_size
    for _ in range(6):
        side = -(-side // 2)
    return side


def _cfg(img_size: int) -> dict:
    side = final_feature_size(img_size)
    return dict(url="", num_classes=1000, input_size=(3, img_size, img_size), pool_size=(side, side),
                crop_pct=0.875, interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv="patch_embed.0.c", classifier="head.l")


default_cfgs = generate_default_cfgs({name: _cfg(v.img_size) for name, v in VARIANTS.items()})


def _check_weights_source(variant: str, kwargs: dict[str, Any]) -> None:
    """The published weights are files a user downloads: say how to pass one when pretrained=True has none."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    if not (cfg.file or cfg.url or cfg.hf_hub_id or cfg.state_dict):
        raise RuntimeError(f"{variant} has no weights to download: pass the published checkpoint file with "
                           f"pretrained_cfg_overlay=dict(file='{variant}.pth') (timm's scripts: --pretrained-path)")


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> MobileMamba:
    if pretrained:
        _check_weights_source(variant, kwargs)
    row = VARIANTS[variant]
    args = dict(embed_dim=row.embed_dim, depth=row.depth, img_size=row.img_size, drop_path_rate=row.drop_path_rate)
    args.update(kwargs)
    return build_model_with_cfg(MobileMamba, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2)), **args)


@register_model
def mobilemamba_t2(pretrained: bool = False, **kwargs: Any) -> MobileMamba:
    return _create("mobilemamba_t2", pretrained, **kwargs)


@register_model
def mobilemamba_t4(pretrained: bool = False, **kwargs: Any) -> MobileMamba:
    return _create("mobilemamba_t4", pretrained, **kwargs)


@register_model
def mobilemamba_s6(pretrained: bool = False, **kwargs: Any) -> MobileMamba:
    return _create("mobilemamba_s6", pretrained, **kwargs)


@register_model
def mobilemamba_b1(pretrained: bool = False, **kwargs: Any) -> MobileMamba:
    return _create("mobilemamba_b1", pretrained, **kwargs)


@register_model
def mobilemamba_b2(pretrained: bool = False, **kwargs: Any) -> MobileMamba:
    return _create("mobilemamba_b2", pretrained, **kwargs)


@register_model
def mobilemamba_b4(pretrained: bool = False, **kwargs: Any) -> MobileMamba:
    return _create("mobilemamba_b4", pretrained, **kwargs)
