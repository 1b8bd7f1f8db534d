"""The policy's networks: shapes, determinism under a seed, safetensors round trips, learning."""

import pytest
import torch

from worldmodel import checkpoint
from worldmodel.critic import CRITIC_PRESETS, CriticConfig, SuccessCritic
from worldmodel.idm import IDM_PRESETS, IdmConfig, InverseDynamics
from worldmodel.text_encoder import TextEncoder, TextEncoderConfig, TextFeatures, build_vocab
from worldmodel.video_model import VIDEO_PRESETS, Grounding, VideoGenerator, VideoModelConfig

INSTRUCTIONS = ["put the red block on the blue block", "put the blue block on the red block"]


def text_encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(TextEncoderConfig(vocab=build_vocab(INSTRUCTIONS)))


def random_text(batch: int, dim: int) -> TextFeatures:
    return TextFeatures(torch.randn(batch, 5, dim), torch.zeros(batch, 5, dtype=torch.bool), torch.randn(batch, dim))


def test_word_order_changes_the_instruction_embedding():
    text = text_encoder()(INSTRUCTIONS)
    a, b = text.pooled
    assert a.shape == (64,) and not torch.allclose(a, b)
    assert text.tokens.shape == (2, 8, 64) and not text.pad.any()  # one feature per word
    assert text_encoder().ids(["put the zebra on it"])[0, 2] == 1  # unknown words map to <unk>


def test_a_pretrained_encoder_reads_words_the_simulator_never_uses():
    torch.manual_seed(0)
    vocab = build_vocab(INSTRUCTIONS)
    encoder = TextEncoder(TextEncoderConfig(vocab=vocab, pretrained="all-MiniLM-L6-v2")).eval()
    # the frozen model is not part of the policy's weights: only the words, the adapter and the two layers are
    assert not any(name.startswith(("model", "frozen")) for name in encoder.state_dict())
    assert sum(p.numel() for p in encoder.parameters()) < 200_000
    # "place", "slide", "cube" and "onto" are all <unk> to the learned words
    operator = ["place the red cube onto the blue one", "slide the red cube onto the blue one"]
    words_only = TextEncoder(TextEncoderConfig(vocab=vocab)).eval()(operator).pooled
    assert torch.equal(*words_only)
    text = encoder(operator)
    assert text.tokens.shape == (2, 8, 64) and not text.pad.any()  # still one feature per word
    place, slide = text.pooled
    assert not torch.allclose(place, slide, atol=1e-3)


def test_training_drops_known_words_so_the_pretrained_features_must_carry_them():
    torch.manual_seed(0)
    config = TextEncoderConfig(vocab=build_vocab(INSTRUCTIONS), pretrained="all-MiniLM-L6-v2", word_dropout=0.5)
    encoder = TextEncoder(config)
    assert not torch.equal(encoder(INSTRUCTIONS * 8).pooled, encoder(INSTRUCTIONS * 8).pooled)
    encoder.eval()
    assert torch.equal(encoder(INSTRUCTIONS).pooled, encoder(INSTRUCTIONS).pooled)


@pytest.mark.parametrize("preset", sorted(VIDEO_PRESETS))
def test_k_candidates_come_from_one_batch_and_are_reproducible(preset):
    torch.manual_seed(0)
    model, cfg = VideoGenerator(VIDEO_PRESETS[preset]).eval(), VIDEO_PRESETS[preset]
    first, text = torch.randn(2, 3, cfg.size, cfg.size), random_text(2, cfg.text_dim)
    a = model.sample(first, text, k=8, generator=torch.Generator().manual_seed(1))
    b = model.sample(first, text, k=8, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 8, cfg.future_frames, 3, cfg.size, cfg.size)
    assert torch.equal(a, b) and a.abs().max() <= 1


def test_video_model_learns_to_reduce_its_flow_matching_loss():
    torch.manual_seed(0)
    cfg = VideoModelConfig(size=16, future_frames=2, channels=(16, 32))
    model = VideoGenerator(cfg)
    first, text = torch.rand(8, 3, 16, 16) * 2 - 1, random_text(8, cfg.text_dim)
    video = first[:, None].repeat(1, 2, 1, 1, 1)  # a static scene: the future equals the present
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        loss = model.loss(video, first, text)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_grounding_learns_to_point_at_the_named_colour():
    """Two colours, two words: after a short fit the point lands on the block the text names."""
    torch.manual_seed(0)
    encoder, grounding = text_encoder(), Grounding(64, 16)
    frames, truth = torch.full((32, 3, 16, 16), -1.0), torch.rand(32, 2, 2) * 0.5 + 0.25
    texts = []
    for i, (red_at, blue_at) in enumerate(truth):
        for channel, (x, y) in ((0, red_at), (2, blue_at)):
            frames[i, channel, int(y * 16) - 1 : int(y * 16) + 1, int(x * 16) - 1 : int(x * 16) + 1] = 1.0
        texts.append(INSTRUCTIONS[i % 2])
    target = torch.stack([t if i % 2 == 0 else t.flip(0) for i, t in enumerate(truth)])  # the object named first
    opt = torch.optim.Adam([*encoder.parameters(), *grounding.parameters()], 3e-3)
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(grounding(frames, encoder(texts)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    points = grounding(frames, encoder(texts))
    assert points.shape == (32, 2, 2) and (points - target).abs().max(-1).values.mean() < 0.1


def test_idm_gives_one_action_and_confidence_per_transition():
    idm = InverseDynamics(IDM_PRESETS["tiny"]).eval()
    actions, confidence = idm.actions(torch.randn(5, 6, 3, 32, 32))
    assert actions.shape == (5, 4, 3) and confidence.shape == (5, 4)
    assert torch.all((confidence > 0) & (confidence <= 1))


def test_critic_scores_are_probabilities():
    critic = SuccessCritic(CRITIC_PRESETS["tiny"]).eval()
    scores = critic.score(torch.randn(4, 5, 3, 32, 32), torch.randn(4, 64))
    assert scores.shape == (4,) and torch.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize(
    ("cls", "config"),
    [
        (VideoGenerator, VideoModelConfig()),
        (InverseDynamics, IdmConfig()),
        (SuccessCritic, CriticConfig()),
        (TextEncoder, TextEncoderConfig(vocab=build_vocab(INSTRUCTIONS))),
        (TextEncoder, TextEncoderConfig(vocab=build_vocab(INSTRUCTIONS), pretrained="all-MiniLM-L6-v2")),
        (VideoGenerator, VideoModelConfig(patch=2)),
        (VideoGenerator, VideoModelConfig(prediction="x")),
    ],
)
def test_save_and_load_round_trip_exactly(tmp_path, cls, config):
    torch.manual_seed(0)
    model = cls(config).eval()
    checkpoint.save(model, tmp_path, "net")
    loaded = checkpoint.load(cls, type(config), tmp_path, "net")
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_x_prediction_samples_the_predicted_change_in_one_step_and_learns_it():
    torch.manual_seed(0)
    cfg = VideoModelConfig(prediction="x", channels=(16, 32))
    model = VideoGenerator(cfg).eval()
    first, text = torch.randn(2, 3, cfg.size, cfg.size), random_text(2, cfg.text_dim)
    noise = torch.randn(2, cfg.future_frames, 3, cfg.size, cfg.size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        predicted = model(noise, torch.zeros(2), first, text, model.grounding(first, text))
    one_step = model.sample(first, text, k=1, steps=1, generator=torch.Generator().manual_seed(3))[:, 0]
    assert torch.allclose(one_step, (first[:, None] + predicted / cfg.change_scale).clamp(-1, 1), atol=1e-5)

    # the loss is the error in the change itself, whatever the noise: a model that outputs the true
    # change scores zero
    change = torch.randn(2, cfg.future_frames, 3, cfg.size, cfg.size) * 0.05
    video = first[:, None] + change
    model.forward = lambda x_t, t, f, txt, pts: change * cfg.change_scale
    assert model.loss(video, first, text).item() < 1e-10
