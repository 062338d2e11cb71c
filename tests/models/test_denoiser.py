"""Denoiser adapters against diffusers' own schedulers; CFG batching; layouts; UNet backends."""

import pytest
import torch

from tests.helpers import assert_close
from tests.models.tiny import scheduler, tiny_cond_unet, tiny_unet
from warped_fast.models import ConditioningLayout, DiffusersDenoiser, inpaint_condition, sr_condition
from warped_fast.sampling import diffusers_schedule, karras_sigmas, timesteps_for_sigmas


class Recorder(torch.nn.Module):
    """Wraps a UNet and records its inputs; returns a fixed output when given one."""

    def __init__(self, unet, fixed=None):
        super().__init__()
        self.unet, self.fixed, self.calls = unet, fixed, []
        self.config = unet.config

    def forward(self, x, t, **kw):
        self.calls.append((x.detach().clone(), t.detach().clone(), kw))
        out = self.unet(x, t, **kw)
        if self.fixed is not None:
            out.sample = self.fixed.expand_as(out.sample).clone()
        return out


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("karras", [False, True])
def test_adapter_matches_diffusers_euler_step(kind, karras):
    sch = scheduler(kind, use_karras_sigmas=karras)
    sched = diffusers_schedule(sch, 8)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 4, 16, 16, generator=g) * 3
    fixed = torch.randn(2, 4, 16, 16, generator=g)
    rec = Recorder(tiny_unet(), fixed)
    den = DiffusersDenoiser(rec, scheduler=sch, schedule=sched)
    for i in (0, 3, 7):
        sigma = torch.full((2,), float(sched.sigmas[i]))
        d = den(u, sigma)
        x_in, t_in, _ = rec.calls[-1]
        # The UNet sees the scheduler's scaled input and timestep.
        sch._step_index = None
        sch._init_step_index(sch.timesteps[i])
        assert_close(x_in, sch.scale_model_input(u, sch.timesteps[i]), atol=1e-6, what="scaled input")
        assert_close(t_in, sch.timesteps[i].expand(2), atol=1e-4, what="timestep")
        ref = sch.step(fixed, sch.timesteps[i], u)
        assert_close(d, ref.pred_original_sample, atol=1e-5, rtol=1e-5, what=f"x0 ({kind})")
        s, sn = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
        mine = u + (sn - s) * (u - d) / s
        assert_close(mine, ref.prev_sample, atol=1e-4, rtol=1e-5, what=f"Euler step ({kind})")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_edm_adapter_matches_diffusers_edm_euler_step(kind):
    """An EDM model (EDMEulerScheduler: c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = 0.25 log sigma,
    x0 = c_skip u + c_out F): the UNet's input and timestep, x0 and the Euler step as diffusers'."""
    from diffusers import EDMEulerScheduler

    sch = EDMEulerScheduler(sigma_data=0.7, sigma_max=40.0, prediction_type=kind)
    sched = diffusers_schedule(sch, 6)
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 4, 16, 16, generator=g) * 5
    fixed = torch.randn(2, 4, 16, 16, generator=g)
    rec = Recorder(tiny_unet(), fixed)
    den = DiffusersDenoiser(rec, scheduler=sch)
    assert den.sigma_data == 0.7 and den.alphas_cumprod is None
    for i in (0, 2, 5):
        d = den(u, torch.full((2,), float(sched.sigmas[i])))
        x_in, t_in, _ = rec.calls[-1]
        sch._step_index = None
        sch._init_step_index(sch.timesteps[i])
        assert_close(
            x_in, sch.scale_model_input(u, sch.timesteps[i]), atol=1e-6, rtol=1e-6, what="scaled input"
        )
        assert_close(t_in, sch.timesteps[i].expand(2).float(), atol=1e-5, what="timestep")
        ref = sch.step(fixed, sch.timesteps[i], u)
        assert_close(d, ref.pred_original_sample, atol=1e-5, rtol=1e-5, what=f"x0 ({kind})")
        s, sn = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
        assert_close(u + (sn - s) * (u - d) / s, ref.prev_sample, atol=1e-4, rtol=1e-5, what="Euler step")
    with pytest.raises(ValueError, match="prediction_type: expected one of"):
        DiffusersDenoiser(tiny_unet(), scheduler=sch, prediction_type="sample")
    with pytest.raises(ValueError, match="scheduler.config.sigma_data: expected > 0"):
        DiffusersDenoiser(tiny_unet(), scheduler=EDMEulerScheduler(sigma_data=0.0))


def test_timesteps_for_arbitrary_sigmas_match_diffusers():
    sch = scheduler("epsilon", use_karras_sigmas=True)
    sch.set_timesteps(10)
    t = timesteps_for_sigmas(torch.as_tensor(sch.sigmas[:-1]).double(), sch.alphas_cumprod)
    assert_close(t, torch.as_tensor(sch.timesteps).double(), atol=1e-3, what="sigma -> t")


def test_cfg_runs_both_halves_in_one_batch():
    unet = tiny_cond_unet()
    sch = scheduler()
    g = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(1, 5, 16, generator=g), torch.randn(1, 5, 16, generator=g)
    u = torch.randn(3, 4, 16, 16, generator=g)
    sigma = torch.tensor([10.0, 5.0, 1.0])
    rec = Recorder(unet)
    den = DiffusersDenoiser(
        rec, scheduler=sch, prompt_embeds=pos, negative_prompt_embeds=neg, guidance_scale=4.0
    )
    with torch.no_grad():
        d = den(u, sigma)
        assert len(rec.calls) == 1 and rec.calls[0][0].shape[0] == 6
        ehs = rec.calls[0][2]["encoder_hidden_states"]
        assert torch.equal(ehs[:3], neg.expand(3, -1, -1)) and torch.equal(ehs[3:], pos.expand(3, -1, -1))
        d_c = DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos)(u, sigma)
        d_u = DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=neg)(u, sigma)
    assert_close(d, d_u + 4.0 * (d_c - d_u), atol=1e-4, rtol=1e-4, what="CFG combination")


def test_guidance_rescale_as_diffusers():
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import rescale_noise_cfg

    unet, sch = tiny_cond_unet(), scheduler()
    g = torch.Generator().manual_seed(2)
    pos, neg = torch.randn(1, 5, 16, generator=g), torch.randn(1, 5, 16, generator=g)
    u = torch.randn(2, 4, 16, 16, generator=g) * 3
    sigma = torch.tensor([3.0, 1.5])
    s = sigma.view(-1, 1, 1, 1)
    with torch.no_grad():  # epsilon prediction: the model output is (u - D) / sigma
        eps_c = (u - DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos)(u, sigma)) / s
        eps_u = (u - DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=neg)(u, sigma)) / s
        den = DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos, negative_prompt_embeds=neg,
                                guidance_scale=5.0, guidance_rescale=0.7)  # fmt: skip
        eps = (u - den(u, sigma)) / s
    want = rescale_noise_cfg(eps_u + 5.0 * (eps_c - eps_u), eps_c, 0.7)
    assert_close(eps, want, atol=1e-4, rtol=1e-4, what="rescaled CFG output")
    with pytest.raises(ValueError, match="guidance_rescale: expected a finite number >= 0"):
        DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos, guidance_rescale=-0.5)
    with pytest.raises(ValueError, match="guidance_rescale: rescales classifier-free guidance"):
        DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos, guidance_rescale=0.7)


def test_sdxl_added_conditions_are_passed_and_batched():
    unet = tiny_cond_unet(sdxl=True)
    g = torch.Generator().manual_seed(2)
    pos, neg = torch.randn(1, 5, 16, generator=g), torch.randn(1, 5, 16, generator=g)
    added = {"text_embeds": torch.randn(1, 16, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    nadded = {"text_embeds": torch.randn(1, 16, generator=g), "time_ids": added["time_ids"]}
    rec = Recorder(unet)
    den = DiffusersDenoiser(
        rec, scheduler=scheduler(), prompt_embeds=pos, negative_prompt_embeds=neg, added_cond_kwargs=added,
        negative_added_cond_kwargs=nadded, guidance_scale=2.0,
    )  # fmt: skip
    with torch.no_grad():
        d = den(torch.randn(2, 4, 16, 16, generator=g), torch.tensor([3.0, 1.0]))
    a = rec.calls[0][2]["added_cond_kwargs"]
    assert a["text_embeds"].shape == (4, 16) and torch.equal(
        a["text_embeds"][:2], nadded["text_embeds"].expand(2, -1)
    )
    assert d.shape == (2, 4, 16, 16) and torch.isfinite(d).all()
    # Without negative added conditions: the positive time_ids and zero text_embeds (diffusers' SDXL).
    rec.calls.clear()
    den = DiffusersDenoiser(
        rec, scheduler=scheduler(), prompt_embeds=pos, negative_prompt_embeds=neg, added_cond_kwargs=added,
        guidance_scale=2.0,
    )  # fmt: skip
    with torch.no_grad():
        den(torch.randn(2, 4, 16, 16, generator=g), torch.tensor([3.0, 1.0]))
    a = rec.calls[0][2]["added_cond_kwargs"]
    assert torch.equal(a["time_ids"], added["time_ids"].expand(4, -1))
    assert torch.equal(a["text_embeds"][:2], torch.zeros(2, 16))


def test_layouts():
    assert ConditioningLayout.for_unet(9).kind == "inpaint"
    assert ConditioningLayout.for_unet(8).kind == "sr"
    assert ConditioningLayout.for_unet(4).kind == "none"
    assert ConditioningLayout.for_unet(6).kind == "concat"
    assert ConditioningLayout.for_unet(7, class_embeddings=True) == ConditioningLayout.sr_image()  # x4
    assert ConditioningLayout.for_unet(7).kind == "concat"  # 4 + 3 without a noise level's embeddings
    assert ConditioningLayout.for_unet(6, 3).kind == "sr"  # a pixel-space SR model: 3 + 3
    with pytest.raises(ValueError, match="cond_channels: the sr_image layout has 3, got 4"):
        ConditioningLayout("sr_image", 4, 4)
    from warped_fast.models import IdentityAutoencoder
    from warped_fast.models.layouts import frame_condition

    with pytest.raises(
        ValueError, match="kind: the 'inpaint' task takes the layouts \\('inpaint', 'fill'\\), got 'sr_image'"
    ):
        frame_condition(
            "inpaint", torch.rand(1, 3, 4, 4), torch.ones(1, 1, 4, 4), IdentityAutoencoder(), kind="sr_image"
        )
    mask = torch.ones(2, 1, 8, 8)
    lat = torch.randn(2, 4, 8, 8)
    c = inpaint_condition(mask, lat)
    assert c.shape == (2, 5, 8, 8) and torch.equal(c[:, :1], mask) and torch.equal(c[:, 1:], lat)
    x = ConditioningLayout.inpaint().unet_input(torch.randn(2, 4, 8, 8), c)
    assert x.shape == (2, 9, 8, 8)
    assert sr_condition(lat) is lat
    with pytest.raises(ValueError, match=r"cond: expected shape \[2, 5, 8, 8\]"):
        ConditioningLayout.inpaint().unet_input(torch.randn(2, 4, 8, 8), lat)
    with pytest.raises(ValueError, match="mask: expected shape"):
        inpaint_condition(lat, lat)
    with pytest.raises(ValueError, match="cond_channels"):
        ConditioningLayout("inpaint", 4, 3)


def test_inpaint_denoiser_with_condition():
    unet = tiny_unet(in_channels=9)
    den = DiffusersDenoiser(unet, scheduler=scheduler())
    assert den.layout.kind == "inpaint"
    cond = inpaint_condition(torch.ones(1, 1, 16, 16), torch.randn(1, 4, 16, 16))
    with torch.no_grad():
        assert den(torch.randn(1, 4, 16, 16), torch.tensor([2.0]), cond).shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="cond: expected shape"):
        den(torch.randn(1, 4, 16, 16), torch.tensor([2.0]))


def test_bad_construction():
    with pytest.raises(ValueError, match="scheduler / alphas_cumprod"):
        DiffusersDenoiser(tiny_unet())
    with pytest.raises(ValueError, match="prompt_embeds: required"):
        DiffusersDenoiser(tiny_cond_unet(), scheduler=scheduler())
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusersDenoiser(tiny_unet(), scheduler=scheduler(), prediction_type="x")
    assert DiffusersDenoiser(tiny_unet(), scheduler=scheduler("original_sample")).prediction_type == "sample"
    with pytest.raises(ValueError, match="guidance_scale: classifier-free guidance needs"):
        DiffusersDenoiser(tiny_unet(), scheduler=scheduler(), guidance_scale=3.0)
    pos = torch.zeros(1, 5, 16)
    with pytest.raises(
        ValueError, match=r"added_cond_kwargs: an SDXL UNet .* needs \['text_embeds', 'time_ids'\]"
    ):
        DiffusersDenoiser(tiny_cond_unet(sdxl=True), scheduler=scheduler(), prompt_embeds=pos)
    added = {"text_embeds": torch.zeros(1, 16), "time_ids": torch.zeros(1, 6)}
    with pytest.raises(ValueError, match=r"negative_added_cond_kwargs: \['foo'\] have no counterpart"):
        DiffusersDenoiser(tiny_cond_unet(sdxl=True), scheduler=scheduler(), prompt_embeds=pos,
                          added_cond_kwargs=added, negative_added_cond_kwargs={"foo": torch.zeros(1)})  # fmt: skip


def test_sigma_as_one_float_and_timesteps_exact_after_a_cast():
    den = DiffusersDenoiser(tiny_unet(), scheduler=scheduler())
    u = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(den(u, 3.0), den(u, torch.tensor([3.0, 3.0])))
    with pytest.raises(ValueError, match=r"sigma: expected a float or a tensor of shape \[2\]"):
        den(u, torch.tensor([1.0, 2.0, 3.0]))
    sig = torch.tensor([14.6, 1.3, 0.03])
    t = den.timesteps(sig)
    assert torch.equal(den.half().timesteps(sig), t)  # float64 alphas survive casting the module


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_half_precision_latents_at_large_sigmas(kind):
    """A float16 ``u`` at sigma 400 (sigma^2 past float16's range): the scalings run in float32, so D is
    finite and the float32 computation's, rounded."""
    from warped_fast.models import x0_from_model_output

    den = DiffusersDenoiser(tiny_unet(), scheduler=scheduler(kind))
    u = 400 * torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([400.0, 300.0])
    with torch.no_grad():
        want, got = den(u, sigma), den(u.half(), sigma)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    assert_close(got.float(), want, atol=2e-3 * want.abs().max(), rtol=0)
    out = torch.randn_like(u)
    d = x0_from_model_output(out.half(), u.half(), sigma, kind)
    assert d.dtype == torch.float16 and torch.isfinite(d).all()
    ref = x0_from_model_output(out.half().float(), u.half().float(), sigma, kind)
    assert torch.equal(d, ref.half())


def test_compile_backend_matches_eager_and_reports_cost():
    unet = tiny_unet()
    sch = scheduler()
    u = torch.randn(1, 4, 16, 16)
    s = torch.tensor([5.0])
    eager = DiffusersDenoiser(unet, scheduler=sch)
    comp = DiffusersDenoiser(unet, scheduler=sch, backend="compile")
    with torch.no_grad():
        a, b = eager(u, s), comp(u, s)
    assert_close(b, a, atol=1e-4, rtol=1e-4, what="compiled vs eager")
    assert comp.runner.total_compile_seconds > 0
    # forward + input gradient through the compiled module
    ug = u.clone().requires_grad_()
    (g,) = torch.autograd.grad(comp(ug, s).square().sum(), ug)
    ue = u.clone().requires_grad_()
    (ge,) = torch.autograd.grad(eager(ue, s).square().sum(), ue)
    assert_close(g, ge, atol=1e-3, rtol=1e-3, what="compiled input gradient")


def test_compiled_runner_keeps_a_graph_per_shape_past_dynamo_limit():
    """Each new batch size (static shapes) gets its own compiled graph, also past dynamo's recompile
    limit, where dynamo would otherwise run the module eagerly without saying so."""
    from torch._dynamo.utils import counters

    from warped_fast.models.unet_backends import UNetRunner

    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=2):
        runner = UNetRunner(torch.nn.Linear(4, 3), "compile")
        for b in range(1, 5):
            runner(torch.randn(b, 4))
    assert counters["stats"]["unique_graphs"] == 4 and len(runner.compile_seconds) == 4


def test_karras_schedule():
    s = karras_sigmas(10, 0.002, 80.0)
    assert s.shape == (11,) and s[0] == 80.0 and s[-1] == 0 and abs(s[-2] - 0.002) < 1e-12
    assert (s[1:] < s[:-1]).all()


def test_continuous_timesteps_of_any_sigma():
    """A continuous-time v-prediction scheduler's timestep is 0.25 log sigma, for the schedule's sigmas
    and any other (direct calls, a residual model's rescaled sigma), as diffusers computes it."""
    sch = scheduler("v_prediction", timestep_type="continuous", use_karras_sigmas=True)
    sched = diffusers_schedule(sch, 6)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(1, 4, 16, 16, generator=g) * 3
    fixed = torch.randn(1, 4, 16, 16, generator=g)
    rec = Recorder(tiny_unet(), fixed)
    den = DiffusersDenoiser(rec, scheduler=sch)  # no set_schedule: nothing to look the sigmas up in
    for i in (0, 4):
        d = den(u, torch.tensor([float(sched.sigmas[i])]))
        assert_close(rec.calls[-1][1], sch.timesteps[i].reshape(1), atol=1e-5, what="timestep")
        sch._step_index = None
        sch._init_step_index(sch.timesteps[i])
        assert_close(d, sch.step(fixed, sch.timesteps[i], u).pred_original_sample, atol=1e-5, what="x0")
    sigma = torch.tensor([5.0, 0.3], dtype=torch.float64)
    assert_close(den.timesteps(sigma), 0.25 * sigma.log(), atol=1e-12, what="0.25 log sigma")


def test_learned_variance_latent_channels():
    """A learned-variance UNet outputs 2C channels (mean, variance): the layout given says C; a layout
    that fits neither C nor 2C outputs is refused."""
    sr = DiffusersDenoiser(tiny_unet(6, 6), scheduler=scheduler(), layout=ConditioningLayout.sr(3))
    assert sr.latent_channels == 3
    u, cond = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    assert sr(u, torch.tensor([2.0]), cond).shape == (1, 3, 16, 16)  # the mean half
    inpaint = DiffusersDenoiser(tiny_unet(9, 8), scheduler=scheduler(), layout=ConditioningLayout.inpaint(4))
    assert inpaint.latent_channels == 4
    # without a layout: the outputs, or half of more outputs than inputs (4 + 1 inputs: a concat layout)
    assert DiffusersDenoiser(tiny_unet(5, 4), scheduler=scheduler()).layout.kind == "concat"
    assert DiffusersDenoiser(tiny_unet(3, 6), scheduler=scheduler()).latent_channels == 3
    with pytest.raises(ValueError, match="layout: 4 latent channels, but the UNet has 6 outputs"):
        DiffusersDenoiser(tiny_unet(8, 6), scheduler=scheduler(), layout=ConditioningLayout.sr(4))


def test_flow_matching_schedulers_are_refused():
    from diffusers import FlowMatchEulerDiscreteScheduler

    with pytest.raises(
        ValueError, match="scheduler: FlowMatchEulerDiscreteScheduler has neither alphas_cumprod"
    ):
        DiffusersDenoiser(tiny_unet(), scheduler=FlowMatchEulerDiscreteScheduler())


def test_text_condition_shapes_are_checked():
    unet, sch = tiny_cond_unet(sdxl=True), scheduler()
    pos, added = torch.zeros(1, 5, 16), {"text_embeds": torch.zeros(1, 16), "time_ids": torch.zeros(1, 6)}
    with pytest.raises(ValueError, match=r"prompt_embeds: expected a tensor \[B, L, D\]"):
        DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos[0], added_cond_kwargs=added)
    with pytest.raises(ValueError, match="prompt_embeds: the UNet takes embeddings of width 16"):
        DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=torch.zeros(1, 5, 8), added_cond_kwargs=added)
    with pytest.raises(ValueError, match=r"negative_prompt_embeds: expected \[B, 5, 16\]"):
        DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos, negative_prompt_embeds=torch.zeros(1, 7, 16),
                          added_cond_kwargs=added, guidance_scale=2.0)  # fmt: skip
    with pytest.raises(ValueError, match=r"added_cond_kwargs\['time_ids'\]: expected a tensor \[B, \.\.\.\]"):
        DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=pos, added_cond_kwargs={**added, "time_ids": torch.zeros(6)})  # fmt: skip
    from diffusers import UNet2DConditionModel

    proj = UNet2DConditionModel(**{**tiny_cond_unet().config, "encoder_hid_dim": 24})  # text_proj: 24 -> 16
    DiffusersDenoiser(proj, scheduler=sch, prompt_embeds=torch.zeros(1, 5, 24))  # its input width: fine
    den = DiffusersDenoiser(unet, scheduler=sch, prompt_embeds=torch.zeros(2, 5, 16), added_cond_kwargs=added)
    assert den(torch.randn(2, 4, 16, 16), torch.tensor([2.0, 1.0])).shape == (2, 4, 16, 16)  # one per item
    with pytest.raises(ValueError, match="prompt_embeds: 2 rows do not fit a call with 3 items"):
        den(torch.randn(3, 4, 16, 16), torch.tensor([2.0, 1.0, 1.0]))
