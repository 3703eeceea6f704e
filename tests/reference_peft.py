"""Independent re-computations of TempMe's and DGL's video/text encoders, for fidelity tests.

Written from LunarShen/TempMe@e624930 (``tvr/models/modeling.py`` get_video_feat,
``module_tome_patch.py`` ToMeBlock / ToMeAttention, ``module_tome_merge.py``
bipartite_soft_matching / merge_wavg) and knightyxp/DGL@9139fd1 (``modules/clip.py``
VisualTransformer.incorporate_prompt / forward_deep_prompt, ResidualAttentionBlock with
``visual=True``, CLIP.encode_prompt / encode_text). They read a state dict by the references'
key names (``...attn.TVPt_LoRA_a``, ``...TVPt_Video_Positional_embedding``,
``visual_prompt_embedding``, ``prefix_text_prompt_proj_layer``, ...), follow the references'
tensor layouts (DGL is sequence-first and calls ``nn.functional.multi_head_attention_forward``
as ``nn.MultiheadAttention`` does) and use no module of this project.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _ln(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], 1e-5)


def _mlp(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    h = x @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
    h = h * torch.sigmoid(1.702 * h)
    return h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]


# ----------------------------------------------------------------------------------------- TempMe
def _tempme_matching(metric, r, cls_num):
    """module_tome_merge.bipartite_soft_matching (the r_f argument is unused there)."""
    metric = metric[:, cls_num:, :]
    if r <= 0:
        return None
    metric = metric / metric.norm(dim=-1, keepdim=True)
    if cls_num % 2 == 0:
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
    else:
        a, b = metric[..., 1::2, :], metric[..., ::2, :]
    scores = a @ b.transpose(-1, -2)
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx = edge_idx[..., r:, :]
    src_idx = edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x, mode="mean"):
        x_cls = x[..., :cls_num, :]
        x_patch = x[..., cls_num:, :]
        if cls_num % 2 == 0:
            src, dst = x_patch[..., ::2, :], x_patch[..., 1::2, :]
        else:
            dst, src = x_patch[..., ::2, :], x_patch[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([x_cls, unm, dst], dim=1)

    return merge


def _merge_wavg(merge, x, size):
    if size is None:
        size = torch.ones_like(x[..., 0, None])
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    return x / size, size


def _tempme_attention(x, size, sd, p, heads):
    """ToMeAttention.forward: packed qkv + LoRA delta, proportional attention, returns k.mean(1)."""
    bsz, tgt_len, embed_dim = x.size()
    a = p + "attn."
    qkv = F.linear(x, sd[a + "in_proj_weight"], sd[a + "in_proj_bias"]).reshape(bsz, tgt_len, 3, heads, embed_dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    delta = F.linear(F.linear(x, sd[a + "TVPt_LoRA_a"]), sd[a + "TVPt_LoRA_b"])
    delta = delta.reshape(bsz, tgt_len, 3, heads, embed_dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = q + delta[0], k + delta[1], v + delta[2]
    q = q * (embed_dim // heads) ** -0.5
    attn = q @ k.transpose(-2, -1)
    if size is not None:
        attn = attn + size.log()[:, None, None, :, 0]
    attn = attn.softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(bsz, tgt_len, embed_dim)
    return F.linear(out, sd[a + "out_proj.weight"], sd[a + "out_proj.bias"]), k.mean(1)


def tempme_video_features(sd: dict, pixels: torch.Tensor, video_mask: torch.Tensor, heads: int, tome_r: int = 2,
                          merge_layer=(8, 9, 10), merge_frame_num=(2, 2, 3), proportion=(0.3, 0.1), frame_pos: int = 1,
                          counts: list | None = None) -> torch.Tensor:  # fmt: skip
    """get_video_feat up to the masked mean of normalised frame features. ``pixels`` (B*T, 3, H, W).
    ``counts`` (optional) receives the token count per group after every block."""
    info = {"size": None, "cls_num": 1, "frame_num": video_mask.shape[1]}
    merge_frame_num = list(merge_frame_num)
    b, n_f = video_mask.size()
    org_n_f = n_f
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = sd["visual.class_embedding"] + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre")
    info["token_num"] = x.shape[1]
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        if i not in merge_layer:
            if i < merge_layer[0]:
                r_f, m_token = 1, [tome_r]
            else:
                m = int(info["token_num"] * proportion[1])
                m = min((info["token_num"] - info["cls_num"]) // 2, m)
                r_f, m_token = 1, [m]
        else:
            r_f = merge_frame_num.pop(0)
            m0 = int(info["token_num"] * r_f * proportion[0])
            m0 = min((info["token_num"] - info["cls_num"]) * r_f // 2, m0)
            m1 = int((info["token_num"] * r_f - m0) * proportion[1])
            m1 = min(((info["token_num"] - info["cls_num"]) * r_f - m0) // 2, m1)
            m_token = [m0, m1]
        # ToMeBlock.forward
        if r_f > 1:
            r = m_token[0]
            metric = x.detach()
            bsz, token_num, embed_dim = x.shape
            cls_num = info["cls_num"]
            if info["size"] is None:
                info["size"] = torch.ones_like(x[..., 0, None])
            x = x.reshape(bsz // r_f, r_f, token_num, embed_dim)
            metric = metric.reshape(bsz // r_f, r_f, token_num, embed_dim)
            size = info["size"].reshape(bsz // r_f, r_f, token_num, 1)
            x = torch.cat([x[:, :, :cls_num].reshape(bsz // r_f, -1, embed_dim), x[:, :, cls_num:].reshape(bsz // r_f, -1, embed_dim)], 1)
            metric = torch.cat([metric[:, :, :cls_num].reshape(bsz // r_f, -1, embed_dim), metric[:, :, cls_num:].reshape(bsz // r_f, -1, embed_dim)], 1)
            info["size"] = torch.cat([size[:, :, :cls_num].reshape(bsz // r_f, -1, 1), size[:, :, cls_num:].reshape(bsz // r_f, -1, 1)], 1)
            if frame_pos == 1:
                pe = sd[p + "TVPt_Video_Positional_embedding"].reshape(1, info["frame_num"] // r_f, r_f, 1, embed_dim)
                pe = pe.expand(bsz // info["frame_num"], -1, -1, token_num, -1).reshape(bsz // r_f, r_f, token_num, embed_dim)
                pe = torch.cat([pe[:, :, :cls_num].reshape(bsz // r_f, -1, embed_dim), pe[:, :, cls_num:].reshape(bsz // r_f, -1, embed_dim)], 1)
            info["cls_num"] = cls_num * r_f
            info["token_num"] = token_num * r_f
            info["frame_num"] = info["frame_num"] // r_f
            if r > 0:
                merge = _tempme_matching(metric, r, info["cls_num"])
                if frame_pos == 1:
                    x = x + pe
                x, info["size"] = _merge_wavg(merge, x, info["size"])
                info["token_num"] -= r
        out, metric = _tempme_attention(_ln(x, sd, p + "ln_1"), info["size"], sd, p, heads)
        x = x + out
        r = m_token[-1]
        if r > 0:
            merge = _tempme_matching(metric, r, info["cls_num"])
            x, info["size"] = _merge_wavg(merge, x, info["size"])
            info["token_num"] -= r
        x = x + _mlp(_ln(x, sd, p + "ln_2"), sd, p)
        if counts is not None:
            counts.append(x.shape[1])
    n_f, token_len, cls_num = info["frame_num"], info["token_num"], info["cls_num"]
    x = x.view(b, n_f, token_len, -1)[:, :, :cls_num, :].reshape(b, org_n_f, -1)
    feat = _ln(x, sd, "visual.ln_post") @ sd["visual.proj"]
    feat = feat / feat.norm(dim=-1, keepdim=True)
    m = video_mask.float().unsqueeze(-1)
    return (feat * m).sum(1) / m.sum(1).clamp(min=1)


# -------------------------------------------------------------------------------------------- DGL
def _mha(q, k, v, sd, a, heads):
    """nn.MultiheadAttention(q, k, v) on (L, N, D), no mask."""
    return F.multi_head_attention_forward(q, k, v, q.shape[-1], heads, sd[a + "in_proj_weight"], sd[a + "in_proj_bias"],
                                          None, None, False, 0.0, sd[a + "out_proj.weight"], sd[a + "out_proj.bias"],
                                          training=False, need_weights=False)[0]  # fmt: skip


def dgl_linear_prompts(sd: dict, layers: int, local: int, width: int):
    """CLIP.encode_prompt with shared_latent_space linear, batch 1: (layers, 1, 8, Dt), (layers, 1, 4, Dv)."""
    vp = sd["visual_prompt_embedding"].view(1, local, layers, width).permute(2, 0, 1, 3)
    pre = vp @ sd["prefix_text_prompt_proj_layer.weight"].T + sd["prefix_text_prompt_proj_layer.bias"]
    post = vp @ sd["postfix_text_prompt_proj_layer.weight"].T + sd["postfix_text_prompt_proj_layer.bias"]
    return torch.cat([pre, post], dim=2), vp


def dgl_video_feature(sd: dict, pixels: torch.Tensor, frames: int, heads: int, layers_prompted: int, local: int = 4,
                      global_count: int = 4) -> torch.Tensor:  # fmt: skip
    """VisualTransformer.forward + encode_image (global_prompt0) for B videos of ``frames`` frames,
    shared_latent_space linear. pixels (B*T, 3, H, W)."""
    width = sd["visual.class_embedding"].shape[0]
    _, visual_prompt = dgl_linear_prompts(sd, layers_prompted, local, width)
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([sd["visual.class_embedding"] + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
    x = _ln(x + sd["visual.positional_embedding"], sd, "visual.ln_pre")
    batch = x.shape[0] // frames
    # incorporate_prompt (linear: the same prompts for every frame)
    frame_prompt = visual_prompt[0].expand(batch, -1, -1).reshape(batch, local, width).unsqueeze(1).expand(-1, frames, -1, -1)
    x = x.view(batch, frames, x.size(-2), width)
    global_prompt = sd["global_prompt_embeddings"].expand(batch, -1, -1)
    x = torch.cat((x[:, :, 0:1], frame_prompt, x[:, :, 1:]), dim=2).permute(0, 2, 1, 3).reshape(batch, -1, width)
    x = torch.cat((global_prompt, x), dim=1).permute(1, 0, 2)  # (4 + T*(1+4+P), B, D)
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    hidden = None
    for i in range(layers):
        if i == 0:
            hidden = _dgl_visual_block(x, sd, i, frames, heads, global_count)
            continue
        if i < layers_prompted:
            fp = visual_prompt[i].expand(batch, -1, -1).view(batch, local, width).unsqueeze(1).expand(-1, frames, -1, -1).permute(2, 1, 0, 3)
            h_global = hidden[:global_count]
            h = hidden[global_count:].reshape(-1, frames, batch, width)
            h_local = torch.cat((h[:1], fp, h[1 + local :]), dim=0).reshape(-1, batch, width)
            hidden = torch.cat((h_global, h_local), dim=0)
        hidden = _dgl_visual_block(hidden, sd, i, frames, heads, global_count)
    hidden = hidden.permute(1, 0, 2)
    hidden = _ln(hidden, sd, "visual.ln_post") @ sd["visual.proj"]
    return hidden[:, 0, :]


def _dgl_visual_block(x, sd, i, video_frame, heads, prompt_length):
    """ResidualAttentionBlock.forward with visual=True (x: (L, B, D))."""
    p = f"visual.transformer.resblocks.{i}."
    batch = x.size(1)
    bt = batch * video_frame
    dim = x.size(-1)
    visual_prompt, frame_token = x[:prompt_length], x[prompt_length:].reshape(-1, bt, dim)
    frame_token = _ln(frame_token, sd, p + "ln_1")
    visual_prompt = _ln(visual_prompt, sd, p + "ln_1")
    query1 = frame_token
    key1 = torch.zeros(prompt_length + query1.size(0), bt, dim)
    for j in range(0, bt, batch):
        key1[:, j : j + batch, :] = torch.cat((visual_prompt, query1[:, j : j + batch, :]), dim=0)
    out_frames = _mha(query1, key1, key1, sd, p + "attn.", heads).reshape(-1, batch, dim)
    key2 = torch.cat((visual_prompt, frame_token.reshape(-1, batch, dim)), dim=0)
    out_prompt = _mha(visual_prompt, key2, key2, sd, p + "attn.", heads)
    x = x + torch.cat((out_prompt, out_frames), dim=0)
    return x + _mlp(_ln(x, sd, p + "ln_2"), sd, p)


def dgl_text_feature(sd: dict, text: torch.Tensor, heads: int, layers_prompted: int, local: int = 4) -> torch.Tensor:
    """CLIP.encode_text with deep text prompts (linear latent), causal mask over the whole sequence."""
    width_v = sd["visual.class_embedding"].shape[0]
    text_prompt, _ = dgl_linear_prompts(sd, layers_prompted, local, width_v)
    prefix = text_prompt.shape[2] // 2
    x = sd["token_embedding.weight"][text] + sd["positional_embedding"][: text.size(1)]
    batch, length = text.shape
    prompt_token = torch.zeros(batch, length + 2 * prefix)
    prompt_token[:, 0:1] = text[:, 0:1]
    prompt_token[:, prefix + 1 : prefix + length] = text[:, 1:length]
    prompts0 = text_prompt[0].expand(batch, -1, -1)
    x = torch.cat((x[:, 0:1], prompts0[:, :prefix], x[:, 1:length], prompts0[:, prefix:]), dim=1).permute(1, 0, 2)
    size = x.shape[0]
    mask = torch.full((size, size), float("-inf")).triu_(1)
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    hidden = None
    for i in range(layers):
        if i == 0:
            hidden = _dgl_text_block(x, sd, i, heads, mask)
            continue
        if i < layers_prompted:
            deep = text_prompt[i].expand(batch, -1, -1).permute(1, 0, 2)
            hidden = torch.cat((hidden[:1], deep[:prefix], hidden[prefix + 1 : prefix + length], deep[prefix:]), dim=0)
        hidden = _dgl_text_block(hidden, sd, i, heads, mask)
    hidden = _ln(hidden.permute(1, 0, 2), sd, "ln_final") @ sd["text_projection"]
    return hidden[torch.arange(batch), prompt_token.argmax(dim=-1)]


def _dgl_text_block(x, sd, i, heads, mask):
    p = f"transformer.resblocks.{i}."
    h = _ln(x, sd, p + "ln_1")
    a = p + "attn."
    out = F.multi_head_attention_forward(h, h, h, h.shape[-1], heads, sd[a + "in_proj_weight"], sd[a + "in_proj_bias"], None, None,
                                         False, 0.0, sd[a + "out_proj.weight"], sd[a + "out_proj.bias"], training=False,
                                         need_weights=False, attn_mask=mask)[0]  # fmt: skip
    x = x + out
    return x + _mlp(_ln(x, sd, p + "ln_2"), sd, p)
