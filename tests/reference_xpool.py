"""X-Pool's pooling, similarity and loss transcribed from its code (layer6ai-labs/xpool), for tests.

``modules/transformer.py`` (MultiHeadedAttention, Transformer), ``modules/metrics.py``
(sim_matrix_training, sim_matrix_inference) and ``modules/loss.py`` (CLIPLoss), as written there,
with its ``Config`` replaced by the three numbers it reads. Its optimiser and schedule
(``modules/optimization.py``) are transformers' AdamW and ``get_cosine_schedule_with_warmup``, the
same code as TempMe's: tests/reference_optimizers.py holds them.
"""

import math
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F


def config(embed_dim, num_mha_heads=1, transformer_dropout=0.3):
    return SimpleNamespace(embed_dim=embed_dim, num_mha_heads=num_mha_heads, transformer_dropout=transformer_dropout)


class MultiHeadedAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.embed_dim
        self.num_heads = config.num_mha_heads
        assert self.embed_dim % self.num_heads == 0
        self.head_dim = self.embed_dim // self.num_heads
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(self, text_embeds, video_embeds):
        num_texts, _ = text_embeds.shape
        q = self.q_proj(text_embeds)
        q = q.reshape(num_texts, self.num_heads, self.head_dim)
        q = q.permute(1, 2, 0)
        num_vids, num_frames, _ = video_embeds.shape
        k = self.k_proj(video_embeds)
        k = k.reshape(num_vids, num_frames, self.num_heads, self.head_dim)
        k = k.permute(0, 2, 1, 3)
        v = self.v_proj(video_embeds)
        v = v.reshape(num_vids, num_frames, self.num_heads, self.head_dim)
        v = v.permute(0, 2, 3, 1)
        attention_logits = k @ q
        attention_logits = attention_logits / math.sqrt(self.head_dim)
        attention_weights = F.softmax(attention_logits, dim=2)
        attention = v @ attention_weights
        attention = attention.permute(0, 3, 1, 2)
        attention = attention.reshape(num_vids, num_texts, self.embed_dim)
        o = self.out_proj(attention)
        return o


class Transformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.embed_dim
        dropout = config.transformer_dropout
        self.cross_attn = MultiHeadedAttention(config)
        self.linear_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.layer_norm1 = nn.LayerNorm(self.embed_dim)
        self.layer_norm2 = nn.LayerNorm(self.embed_dim)
        self.layer_norm3 = nn.LayerNorm(self.embed_dim)
        self.dropout = nn.Dropout(dropout)
        self._init_parameters()

    def _init_parameters(self):
        for name, param in self.named_parameters():
            if "linear" in name or "proj" in name:
                if "weight" in name:
                    nn.init.eye_(param)
                elif "bias" in name:
                    param.data.fill_(0.0)

    def forward(self, text_embeds, video_embeds):
        text_embeds = self.layer_norm1(text_embeds)
        video_embeds = self.layer_norm1(video_embeds)
        attn_out = self.cross_attn(text_embeds, video_embeds)
        attn_out = self.layer_norm2(attn_out)
        linear_out = self.linear_proj(attn_out)
        out = attn_out + self.dropout(linear_out)
        out = self.layer_norm3(out)
        return out


def sim_matrix_training(text_embeds, vid_embeds_pooled, pooling_type="transformer"):
    text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    vid_embeds_pooled = vid_embeds_pooled / vid_embeds_pooled.norm(dim=-1, keepdim=True)
    vid_embeds_pooled = vid_embeds_pooled.permute(1, 2, 0)
    text_embeds = text_embeds.unsqueeze(1)
    sims = torch.bmm(text_embeds, vid_embeds_pooled).squeeze(1)
    return sims


def sim_matrix_inference(text_embeds_per_video_id, vid_embeds_pooled_per_video_id, pooling_type="transformer"):
    """text (num_vids, max_text_per_vid, D), pooled (num_vids, num_vids, max_text_per_vid, D) -> (num_vids, max_text, num_vids)."""
    text_embeds_per_video_id = text_embeds_per_video_id / text_embeds_per_video_id.norm(dim=-1, keepdim=True)
    vid_embeds_pooled_per_video_id = vid_embeds_pooled_per_video_id / vid_embeds_pooled_per_video_id.norm(dim=-1, keepdim=True)
    num_vids, max_text_per_vid, embed_dim = text_embeds_per_video_id.shape
    vid_embeds_pooled_per_video_id = vid_embeds_pooled_per_video_id.permute(1, 2, 3, 0)
    vid_embeds_pooled_per_video_id = vid_embeds_pooled_per_video_id.reshape(num_vids * max_text_per_vid, embed_dim, num_vids)
    text_embeds_per_video_id = text_embeds_per_video_id.unsqueeze(2)
    text_embeds_per_video_id = text_embeds_per_video_id.reshape(num_vids * max_text_per_vid, 1, embed_dim)
    sims = torch.bmm(text_embeds_per_video_id, vid_embeds_pooled_per_video_id)
    sims = sims.view(num_vids, max_text_per_vid, 1, num_vids).squeeze(2)
    return sims


def clip_loss(sims, logit_scale):
    logit_scale = logit_scale.exp()
    logits = sims * logit_scale
    t2v_log_sm = F.log_softmax(logits, dim=1)
    t2v_neg_ce = torch.diag(t2v_log_sm)
    t2v_loss = -t2v_neg_ce.mean()
    v2t_log_sm = F.log_softmax(logits, dim=0)
    v2t_neg_ce = torch.diag(v2t_log_sm)
    v2t_loss = -v2t_neg_ce.mean()
    return (t2v_loss + v2t_loss) / 2.0


def ours_to_reference(state):
    """Our TextConditionedPooling's keys as X-Pool's ``pool_frames`` Transformer names them."""
    return {("cross_attn." + k if k.split(".")[0] in ("q_proj", "k_proj", "v_proj", "out_proj") else k): v for k, v in state.items()}
