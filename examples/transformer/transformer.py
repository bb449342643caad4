"""Transformer encoders in flax.linen as vgbench models: post-LN against pre-LN.

Post-LN (Vaswani et al. 2017) normalizes after each residual sum, x <- LN(x + f(x)); pre-LN
(Xiong et al. 2020; Wang et al. 2019) normalizes each branch's input, x <- x + f(LN(x)), and
once more before the head. Xiong et al. show that at initialization post-LN's gradients
are largest near the output and shrink towards the input, so it needs a learning-rate
warm-up; pre-LN's are of the same size at every block. Each model reads a sequence (batch,
T, channels), embeds it with one Dense layer plus learned positions, runs ``depth`` blocks of
4-head self-attention and a 2x-wide GELU MLP, averages over time and classifies.

Registered through ``vgbench.register_flax_model``: every Dense / DenseGeneral output is a
probed layer (the attention's query, key, value and output projections and the two MLP
layers of each block), named by module path, ordered input -> output.
"""

import flax.linen as nn
import jax.numpy as jnp

import vgbench

HEADS = 4


class Block(nn.Module):
    """One encoder block, post-LN or pre-LN."""

    width: int
    pre_ln: bool

    @nn.compact
    def __call__(self, x):
        attention = nn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=self.width,
                                                    name="attention")
        mlp_in = nn.Dense(2 * self.width, name="mlp_in")
        mlp_out = nn.Dense(self.width, name="mlp_out")
        if self.pre_ln:
            h = nn.LayerNorm(name="ln_attention")(x)
            x = x + attention(h, h)
            h = nn.LayerNorm(name="ln_mlp")(x)
            return x + mlp_out(nn.gelu(mlp_in(h)))
        x = nn.LayerNorm(name="ln_attention")(x + attention(x, x))
        return nn.LayerNorm(name="ln_mlp")(x + mlp_out(nn.gelu(mlp_in(x))))


class Encoder(nn.Module):
    """Dense embedding + learned positions, ``depth`` blocks, mean over time, Dense head."""

    depth: int
    width: int
    classes: int
    pre_ln: bool

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width, name="embed")(x)
        positions = self.param("positions", nn.initializers.normal(0.02), x.shape[-2:])
        x = x + positions
        for i in range(self.depth):
            x = Block(self.width, self.pre_ln, name=f"block_{i + 1}")(x)
        if self.pre_ln:
            x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.classes, name="head")(jnp.mean(x, axis=-2))


def _check(task):
    if len(task.input_shape) != 2:
        raise ValueError(f"the transformer examples need sequences (T, channels); task "
                         f"{task.name!r} gives {task.input_shape}")


def post_ln(spec, task):
    """Transformer encoder, post-LN: x <- LN(x + f(x)) (Vaswani et al. 2017)."""
    _check(task)
    return Encoder(spec.depth, spec.width, task.output_dim, pre_ln=False)


def pre_ln(spec, task):
    """Transformer encoder, pre-LN: x <- x + f(LN(x)) (Xiong et al. 2020)."""
    _check(task)
    return Encoder(spec.depth, spec.width, task.output_dim, pre_ln=True)


# "channels": the encoders take a sequence (T, channels) as it is, not flattened
vgbench.register_flax_model("transformer_post_ln", post_ln, defaults={"task": "seq_digits"},
                            input_layout="channels")
vgbench.register_flax_model("transformer_pre_ln", pre_ln, defaults={"task": "seq_digits"},
                            input_layout="channels")
