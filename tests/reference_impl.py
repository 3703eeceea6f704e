"""Independent re-computations of the reference codebases' heads, for fidelity tests.

Written from ArrowLuo/CLIP4Clip@508ffa3 (``modules/modeling.py`` _loose_similarity /
_cross_similarity, ``modules/module_cross.py``, ``modules/until_module.py``) and
foolwood/DRL@475f96c (``tvr/models/modeling.py`` wti_interaction). They read weights by the
references' own key names from a state dict in the reference's layout and use no module of
this project: attention is written out by hand (sequence-first, as ``nn.MultiheadAttention``
is called there), LayerNorm is CLIP4Clip's TF-style one (eps 1e-12 inside the square root),
masks are CLIP4Clip's additive ``(1 - mask) * -1e6``.
"""

from __future__ import annotations

import torch


def tf_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    u = x.mean(-1, keepdim=True)
    s = (x - u).pow(2).mean(-1, keepdim=True)
    return weight * ((x - u) / torch.sqrt(s + eps)) + bias


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def residual_block(x: torch.Tensor, additive_mask: torch.Tensor, sd: dict, prefix: str, heads: int) -> torch.Tensor:
    """module_cross.ResidualAttentionBlock on x (L, N, D) with an additive (N, L, L) mask."""
    length, batch, width = x.shape
    h = tf_layer_norm(x, sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"])
    qkv = h @ sd[prefix + "attn.in_proj_weight"].T + sd[prefix + "attn.in_proj_bias"]
    q, k, v = qkv.split(width, dim=-1)
    head_dim = width // heads

    def split_heads(t: torch.Tensor) -> torch.Tensor:  # (L, N, D) -> (N, heads, L, hd)
        return t.reshape(length, batch, heads, head_dim).permute(1, 2, 0, 3)

    scores = split_heads(q) @ split_heads(k).transpose(-1, -2) / head_dim**0.5 + additive_mask[:, None]
    out = (scores.softmax(-1) @ split_heads(v)).permute(2, 0, 1, 3).reshape(length, batch, width)
    x = x + out @ sd[prefix + "attn.out_proj.weight"].T + sd[prefix + "attn.out_proj.bias"]
    h = tf_layer_norm(x, sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"])
    h = quick_gelu(h @ sd[prefix + "mlp.c_fc.weight"].T + sd[prefix + "mlp.c_fc.bias"])
    return x + h @ sd[prefix + "mlp.c_proj.weight"].T + sd[prefix + "mlp.c_proj.bias"]


def _extended_mask(mask: torch.Tensor) -> torch.Tensor:
    """CLIP4Clip's ``(1.0 - mask.unsqueeze(1)) * -1000000.0`` expanded to (N, L, L)."""
    extended = (1.0 - mask.float().unsqueeze(1)) * -1000000.0
    return extended.expand(-1, mask.shape[1], -1)


def clip4clip_seq_transf_frames(sd: dict, frames: torch.Tensor, mask: torch.Tensor, layers: int = 4) -> torch.Tensor:
    """_loose_similarity's seqTransf branch (DRL's and EMCL-Net's agg_video_feat): the per-frame output, residual added."""
    heads = frames.shape[-1] // 64 or 1
    x = frames + sd["frame_position_embeddings.weight"][: frames.shape[1]][None]
    x = x.permute(1, 0, 2)
    for i in range(layers):
        x = residual_block(x, _extended_mask(mask), sd, f"transformerClip.resblocks.{i}.", heads)
    return x.permute(1, 0, 2) + frames


def clip4clip_seq_transf_visual(sd: dict, frames: torch.Tensor, mask: torch.Tensor, layers: int = 4) -> torch.Tensor:
    """_loose_similarity's seqTransf branch up to the normalised mean-pooled video vector."""
    x = clip4clip_seq_transf_frames(sd, frames, mask, layers)
    x = x / x.norm(dim=-1, keepdim=True)
    weights = mask.float().unsqueeze(-1)
    pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return pooled / pooled.norm(dim=-1, keepdim=True)


def clip4clip_tight_scores(sd: dict, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor, layers: int = 4) -> torch.Tensor:
    """_cross_similarity: every caption feature (A, D) against every video (V, T, D) -> (A, V)."""
    num_texts, (num_videos, count, width) = text.shape[0], frames.shape
    heads = width // 64 or 1
    scores = torch.empty(num_texts, num_videos)
    for a in range(num_texts):
        concat = torch.cat([text[a][None, None].expand(num_videos, 1, width), frames], dim=1)  # (V, 1 + T, D)
        concat_mask = torch.cat([torch.ones(num_videos, 1), mask.float()], dim=1)
        x = concat + sd["cross.embeddings.position_embeddings.weight"][: count + 1][None]  # no token type: commented out there
        x = x.permute(1, 0, 2)
        for i in range(layers):
            x = residual_block(x, _extended_mask(concat_mask), sd, f"cross.transformer.resblocks.{i}.", heads)
        x = x.permute(1, 0, 2)
        pooled = tf_layer_norm(x, sd["cross.pooler.ln_pool.weight"], sd["cross.pooler.ln_pool.bias"])[:, 0]
        pooled = quick_gelu(pooled @ sd["cross.pooler.dense.weight"].T + sd["cross.pooler.dense.bias"])
        scores[a] = (pooled @ sd["similarity_dense.weight"].T + sd["similarity_dense.bias"]).squeeze(-1)
    return scores


def drl_wti_scores(sd: dict, text_feat: torch.Tensor, text_mask: torch.Tensor, video_feat: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """DRL's wti_interaction (wti_arch 2) without the logit scale: (A, L, D) x (B, T, D) -> (A, B)."""

    def weight_fc(x: torch.Tensor, prefix: str) -> torch.Tensor:
        h = torch.relu(x @ sd[prefix + "0.weight"].T + sd[prefix + "0.bias"])
        return (h @ sd[prefix + "2.weight"].T + sd[prefix + "2.bias"]).squeeze(-1)

    text_mask, video_mask = text_mask.float(), video_mask.float()
    text_weight = weight_fc(text_feat, "text_weight_fc.").masked_fill((1 - text_mask).bool(), float("-inf")).softmax(-1)
    video_weight = weight_fc(video_feat, "video_weight_fc.").masked_fill((1 - video_mask).bool(), float("-inf")).softmax(-1)
    text_feat = text_feat / text_feat.norm(dim=-1, keepdim=True)
    video_feat = video_feat / video_feat.norm(dim=-1, keepdim=True)
    logits = torch.einsum("atd,bvd->abtv", text_feat, video_feat)
    logits = torch.einsum("abtv,at->abtv", logits, text_mask)
    logits = torch.einsum("abtv,bv->abtv", logits, video_mask)
    t2v = torch.einsum("abt,at->ab", logits.max(dim=-1)[0], text_weight)
    v2t = torch.einsum("abv,bv->ab", logits.max(dim=-2)[0], video_weight)
    return (t2v + v2t) / 2.0


class EmclNetReference:
    """EMCL-Net's ``Emcl`` (tvr/models/until_module.py) with its running ``mu`` given, on CPU."""

    def __init__(self, mu: torch.Tensor, stage_num: int = 9, momentum: float = 0.9, lamd: float = 1.0, beta: float = 3.0) -> None:
        self.mu, self.stage_num, self.momentum, self.lamd, self.beta = mu.clone(), stage_num, momentum, lamd, beta

    def __call__(self, embds: torch.Tensor, if_train: bool = True) -> torch.Tensor:
        b, n = embds.size()
        mu = self.mu.repeat(b, 1)
        _embds = embds
        with torch.no_grad():
            for _ in range(self.stage_num):
                _embds_t = _embds.permute(1, 0)
                z = torch.mm(_embds_t, mu)
                z = z / self.lamd
                z = torch.softmax(z, dim=1)
                z = z / (1e-6 + z.sum(dim=0, keepdim=True))
                mu = torch.mm(_embds, z)
                mu = mu / (1e-6 + mu.norm(dim=0, keepdim=True))
        z_t = z.permute(1, 0)
        _embds = torch.mm(mu, z_t)
        if if_train:
            self.mu = self.momentum * self.mu + (1 - self.momentum) * mu.mean(dim=0, keepdim=True)
        return self.beta * _embds + embds


def emcl_net_logits(emcl: EmclNetReference, cls: torch.Tensor, video_feat: torch.Tensor, video_mask: torch.Tensor, temp: float = 3.0, train: bool = True) -> torch.Tensor:
    """EMCL-Net's ``get_logits`` (tvr/models/modeling.py): (A, D) captions x (B, T, D) frames -> (A, B)."""
    v_weight = torch.einsum("ad,bvd->abv", cls, video_feat)
    v_weight = torch.softmax(v_weight / temp, dim=-1)
    v_weight = torch.einsum("abv,bv->abv", v_weight, video_mask.float())
    video_feat = torch.einsum("abv,bvd->abd", v_weight, video_feat)
    a, d = cls.size()
    video_feat = video_feat.reshape(-1, d)
    all_embedding = emcl(torch.cat((video_feat, cls), dim=0), if_train=train)
    video_feat = all_embedding[: video_feat.size(0), :]
    text_feat = all_embedding[video_feat.size(0) :, :]
    _t_feat = text_feat / text_feat.norm(dim=-1, keepdim=True)
    _v_feat = (video_feat / video_feat.norm(dim=-1, keepdim=True)).view(a, -1, d)
    return torch.einsum("ad,abd->ab", _t_feat, _v_feat)


def drl_ti_scores(text_feat: torch.Tensor, text_mask: torch.Tensor, video_feat: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """DRL's wti_interaction with ``interaction == 'ti'`` (tvr/models/modeling.py), no logit scale: (A, L, D) x (B, T, D) -> (A, B)."""
    text_mask, video_mask = text_mask.float(), video_mask.float()
    text_feat = text_feat / text_feat.norm(dim=-1, keepdim=True)
    video_feat = video_feat / video_feat.norm(dim=-1, keepdim=True)
    logits = torch.einsum("atd,bvd->abtv", text_feat, video_feat)
    logits = torch.einsum("abtv,at->abtv", logits, text_mask)
    logits = torch.einsum("abtv,bv->abtv", logits, video_mask)
    text_sum, video_sum = text_mask.sum(-1), video_mask.sum(-1)
    t2v = torch.sum(logits.max(dim=-1)[0], dim=2) / text_sum.unsqueeze(1)
    v2t = torch.sum(logits.max(dim=-2)[0], dim=2) / video_sum.unsqueeze(0)
    return (t2v + v2t) / 2.0
