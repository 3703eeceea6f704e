"""Released checkpoints of the references score as their code scored them (issue 34): a checkpoint saved in
each reference's layout (``torch.save(model.state_dict())``), evaluated by this project's evaluator on
shards whose clips are shorter than the frame count, against an independent computation written from
that reference's code: its loader's zero padding, CLIP run from the file's own weights, CLIP4Clip's
seqTransf head (tests/reference_impl.py) and the reference's similarity (DRL's wti_interaction, EMCL-Net's
get_logits, EERCF's _loose_similarity). The import picks ``--padding-rule reference`` by itself."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import build_model_from_openai_state_dict

from eval.encode import encode_split
from eval.scoring import SplitScorer
from model import backbone
from model.clip_decode import decode_clip
from model.eercf import EERCFWeights
from model.foreign_checkpoints import to_reference_layout
from model.trained_model import load_trained_model
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.reader import ReadErrors, iter_samples, shard_urls
from shards.storage import Store
from tests import reference_eercf
from tests.conftest import write_time_coded_video
from tests.models import clip4clip
from tests.reference_impl import EmclNetReference, clip4clip_seq_transf_frames, drl_ti_scores, drl_wti_scores, emcl_net_logits
from tests.test_reference_fidelity import perturbed, small_clip

pytestmark = pytest.mark.integration
FRAMES, WORDS, SIZE = 5, 16, 32
CASES = {
    "clip4clip-seqTransf": ("clip4clip", dict(head="seqTransf")),
    "drl-seqTransf-wti": ("drl", dict(head="seqTransf", interaction="wti")),
    "drl-seqTransf-ti": ("drl", dict(head="seqTransf", interaction="ti")),
    "emcl-seqTransf": ("emcl", dict(head="seqTransf", emcl={"bases": 32})),
    "eercf-seqTransf": ("eercf", dict(head="seqTransf", eercf=EERCFWeights())),
}


@pytest.fixture(scope="module")
def short_clip_shards(tmp_path_factory):
    """Six clips of 1 to 7 seconds (one frame a second) read with 5 frame slots: three are padded."""
    root = tmp_path_factory.mktemp("short")
    (root / "videos").mkdir()
    lines = []
    for index, seconds in enumerate((1, 2, 3, 5, 6, 7)):
        write_time_coded_video(root / "videos" / f"c{index}.mp4", 48 + 8 * index, 40, float(seconds))
        lines.append(
            json.dumps({"video": f"c{index}.mp4", "captions": [f"clip {index} lasts {seconds} seconds", f"a grey clip number {index}"]})
        )
    (root / "list.jsonl").write_text("\n".join(lines) + "\n")
    build_shards(load_annotations(str(root / "list.jsonl")), str(root / "videos"), Store(str(root / "shards")),
                 ExtractionSettings(short_side=SIZE, max_frames=FRAMES), BuildOptions(samples_per_shard=4, workers=1, show_progress=False))  # fmt: skip
    return root / "shards"


def _independent(state: dict, checkpoint_format: str, split, urls: list[str], emcl_bases: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's (captions x videos) scores from the saved file alone (EMCL-Net's running bases are not
    in its files: it starts them at random when it evaluates, here at the imported model's draw)."""
    clip_state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
    clip = build_model_from_openai_state_dict(dict(clip_state), quick_gelu=True, cast_dtype=None).float().eval()
    clip.load_state_dict(clip_state)  # open_clip's builder rounds an OpenAI state through fp16 (its release's dtype): the file's own values
    samples = {s["__key__"]: s for s in iter_samples(urls, ReadErrors().handler)}
    decoded = [decode_clip(samples[key], FRAMES, SIZE) for key in split.keys]
    frames = torch.stack([f for f, _ in decoded])
    mask = torch.stack([m for _, m in decoded])
    assert (~mask).any(), "the fixture must hold padded clips"
    mean, std = torch.tensor(backbone.CLIP_MEAN).view(3, 1, 1), torch.tensor(backbone.CLIP_STD).view(3, 1, 1)
    pixels = ((frames.float() / 255 - mean) / std) * mask[..., None, None, None]  # the loader's video array: zeros where no frame
    tokens = backbone.tokenizer_for(None)(split.captions, context_length=WORDS)
    with torch.no_grad():
        text = backbone.encode_text(clip, tokens)  # encode_text(return_hidden=True): every token projected, the end token's row
        clip_frames = clip.encode_image(pixels.flatten(0, 1)).view(len(split.keys), FRAMES, -1)
        sequence = clip4clip_seq_transf_frames(state, clip_frames, mask)
        if checkpoint_format == "clip4clip":
            v = F.normalize(sequence, dim=-1) * mask[..., None]
            v = F.normalize(v.sum(1) / mask.sum(1, keepdim=True), dim=-1)
            return F.normalize(text.pooled, dim=-1) @ v.T
        if checkpoint_format == "drl":
            if "text_weight_fc.0.weight" in state:
                return drl_wti_scores(state, text.tokens, text.mask, sequence, mask)
            return drl_ti_scores(text.tokens, text.mask, sequence, mask)
        if checkpoint_format == "emcl":
            emcl = EmclNetReference(emcl_bases)
            return torch.cat([torch.cat([emcl_net_logits(emcl, text.pooled[a : a + 32], sequence[b : b + 32], mask[b : b + 32], train=False)
                                         for b in range(0, len(split.keys), 32)], dim=1) for a in range(0, len(split.captions), 32)])  # fmt: skip
        _, patches = backbone.encode_frames_and_patches(clip, frames, zero_padded=mask)
        scale = clip.logit_scale.exp()
        video, frame_weak, frame_strong, patch_weak = reference_eercf.eval_similarities(
            state["global_mat_weight"], state["frame_logit_weight"], scale, text.pooled[:, None], sequence, clip_frames, patches, mask
        )
        return (0.5 * video + 0.8 * frame_weak + 0.2 * frame_strong + 0.2 * patch_weak) / scale


@pytest.mark.parametrize("name", CASES)
def test_a_released_checkpoint_scores_as_its_code_on_short_clips(short_clip_shards, tmp_path, name):
    checkpoint_format, options = CASES[name]
    model = perturbed(clip4clip(small_clip(), max_frames=FRAMES, **options))
    state = to_reference_layout(model.state_dict(), checkpoint_format)
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(state, path)
    trained = load_trained_model(str(path), checkpoint_format, max_frames=FRAMES, max_words=WORDS)
    assert trained.config.padding_rule == "reference"  # the import chose its code's rule
    urls = shard_urls(str(short_clip_shards))
    split = encode_split(trained.model, urls, backbone.tokenizer_for(None), torch.device("cpu"), FRAMES, WORDS, SIZE, batch_size=4)
    ours = SplitScorer(trained.model, split, torch.device("cpu")).fine(slice(0, len(split.captions)), slice(0, len(split.keys)))
    bases = trained.model.similarity.mu if checkpoint_format == "emcl" else None
    theirs = _independent(state, checkpoint_format, split, urls, bases)
    print(
        f"{name}: max abs diff {(ours - theirs).abs().max().item():.2e} over {tuple(ours.shape)}, scores up to {theirs.abs().max().item():.2f}"
    )
    # EERCF's patch tokens are held in fp16 by the evaluator (README: EERCF), the rest in fp32
    torch.testing.assert_close(ours, theirs, atol=2e-5 if checkpoint_format == "eercf" else 2e-6, rtol=1e-5)
