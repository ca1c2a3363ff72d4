"""Issue 32 item 1: model.quantize=int8|fp8 stores the frozen base's Linear weights quantized (optimum-quanto) under trained
LoRA layers; refused for full fine-tuning, merge phases and nf4 (bitsandbytes, CUDA, not wired); the trained LoRA file
loads on the unquantized base as usual."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException
from peft import LoraConfig

from sdft.errors import ConfigError
from sdft.models.quantize import quantize_models
from sdft.run.train import run


def is_quantized(linear: torch.nn.Linear) -> bool:
    return type(linear.weight) is not torch.nn.Parameter and hasattr(linear.weight, "__tensor_flatten__")


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantized_base_trains_lora_layers(tiny_pipe_factory, kind):
    pipe = tiny_pipe_factory()
    pipe.unet.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    plain = pipe.unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 77, 32)).sample
    assert quantize_models(pipe, kind) > 0
    q = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert is_quantized(q) and is_quantized(pipe.text_encoder.encoder.layers[0].self_attn.q_proj)
    pipe.unet.add_adapter(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v"]))
    torch.manual_seed(0)
    x, t, e = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 77, 32)
    out = pipe.unet(x, t, e).sample
    out.square().mean().backward()
    grads = [p.grad for n, p in pipe.unet.named_parameters() if "lora_B" in n]  # lora_A's are 0 while B is 0
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert out.shape == plain.shape


def test_refusals_come_before_anything_loads(fast_config):
    with pytest.raises(ConfigError, match="adapter.kind=full"):
        run(fast_config("model.quantize=int8", "adapter=full"))
    with pytest.raises(ConfigError, match="CUDA"):
        run(fast_config("model.quantize=nf4"))
    with pytest.raises(ConfigCompositionException):  # a closed choice: refused when the config is composed
        fast_config("model.quantize=int4")


def test_a_quantized_run_writes_a_lora_that_loads_on_the_plain_base(fast_config, tiny_pipe_factory, tmp_path):
    from safetensors.torch import load_file

    summary = run(
        fast_config("model.quantize=int8", "trainer.max_steps=1", "callbacks.validation_seeds=[]", "prior=none")
    )
    lora = tmp_path / "out" / "main" / "lora" / "pytorch_lora_weights.safetensors"
    assert summary["steps"] == 1 and lora.is_file()
    tensors = load_file(str(lora))
    assert tensors and all(v.dtype == torch.float32 for v in tensors.values())  # plain LoRA tensors, no quantized ones
    pipe = tiny_pipe_factory()  # the unquantized base
    pipe.load_lora_weights(str(lora.parent))
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())


def test_int8_layers_on_a_bf16_base_take_permuted_inputs(tiny_pipe_factory):
    """SDXL's / SD 2.x's linear proj_in gets a permuted (NHWC) view; optimum-quanto's CPU int8 kernel for bf16
    activations refused it, so an SDXL int8 run on a bf16 base stopped at its first step (found by bench/sdxl_step.py)."""
    pipe = tiny_pipe_factory()
    pipe.unet.to(torch.bfloat16).requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    quantize_models(pipe, "int8")
    q = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    side, dim = 4, q.in_features
    x = torch.randn(1, dim, side, side, dtype=torch.bfloat16).permute(0, 2, 3, 1).reshape(1, side * side, dim)
    assert not x.is_contiguous()
    assert torch.equal(q(x), q(x.contiguous()))
