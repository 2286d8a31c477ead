//! The residual add and its activation quantizer.

use super::{Build, Context, Io, Layer};
use crate::gpu::{Encoder, Tensor};
use crate::kernels::elementwise::Add;
use crate::quant::Quantizer;
use crate::Result;

/// A residual add: the kernel, the sum `a` (the quantizer's input) and the quantizer.
#[derive(Debug)]
pub(super) struct ResidualAdd {
    io: Io,
    prefix: String,
    add: Add,
    quantizer: Quantizer,
    a: Tensor,
}

impl ResidualAdd {
    pub(super) fn new(b: Build<'_>) -> Result<Self> {
        let io = b.io();
        let add = Add::new(b.gpu, b.n * b.spec.output_len())?;
        let prefix = b.spec.activation_quantizer();
        let (quantizer, a) = b.act_quant.expect("an add has an activation quantizer");
        Ok(Self {
            io,
            prefix,
            add,
            quantizer,
            a,
        })
    }
}

impl Layer for ResidualAdd {
    fn forward(&self, cx: &Context<'_>, enc: &mut Encoder) -> Result<()> {
        // ReLU is implicit: the sum's quantizer is unsigned, and the unsigned clip maps negative
        // sums to 0 with zero gradient, as ReLU then Q would.
        let [x, other] = [0, 1].map(|k| &cx.values[self.io.inputs[k]]);
        self.add.forward(cx.gpu, enc, x, other, &self.a)?;
        cx.record_range(enc, &self.prefix, &self.a, &self.quantizer.x_max)?;
        let output = &cx.values[self.io.output];
        cx.quantize(enc, &self.prefix, &self.quantizer, &self.a, output)
    }

    fn backward(&self, cx: &mut Context<'_>, enc: &mut Encoder, dout: &Tensor) -> Result<()> {
        let ds = cx.sized(&cx.scratch.da, self.a.len())?;
        cx.quantize_backward(enc, &self.prefix, &self.quantizer, &self.a, dout, &ds)?;
        for &v in &self.io.inputs {
            match cx.target(v) {
                Some((dx, true)) => cx.add_into(enc, &ds, &dx)?,
                Some((dx, false)) => enc.copy_buffer_to_buffer(
                    ds.buffer(),
                    ds.offset(),
                    dx.buffer(),
                    dx.offset(),
                    ds.bytes(),
                ),
                None => {}
            }
        }
        Ok(())
    }

    fn quantizers(&self) -> Vec<&Quantizer> {
        vec![&self.quantizer]
    }
}
