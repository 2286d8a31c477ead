//! Max, average and global average pooling.

use super::{Build, Context, Io, Layer};
use crate::gpu::{Encoder, Tensor};
use crate::kernels::pool::{AvgPool2d, MaxPool2d};
use crate::quant::Quantizer;
use crate::spec::{LayerKind, Pool2dShape};
use crate::Result;

/// Max pooling, with the argmax its backward scatters through.
#[derive(Debug)]
pub(super) struct MaxPool {
    io: Io,
    pool: MaxPool2d,
    argmax: Tensor,
}

impl MaxPool {
    pub(super) fn new(b: Build<'_>) -> Result<Self> {
        let LayerKind::MaxPool {
            kernel,
            stride,
            pad,
        } = b.spec.kind
        else {
            unreachable!("a max-pool layer")
        };
        let [c, h, w] = b.spec.input;
        let shape = Pool2dShape::square(b.n, c, h, w, kernel, stride, pad);
        Ok(Self {
            io: b.io(),
            pool: MaxPool2d::new(b.gpu, &shape)?,
            argmax: b.argmax.expect("max-pool layers keep their argmax"),
        })
    }
}

impl Layer for MaxPool {
    fn forward(&self, cx: &Context<'_>, enc: &mut Encoder) -> Result<()> {
        let (input, output) = (&cx.values[self.io.inputs[0]], &cx.values[self.io.output]);
        self.pool.forward(cx.gpu, enc, input, output, &self.argmax)
    }

    fn backward(&self, cx: &mut Context<'_>, enc: &mut Encoder, dout: &Tensor) -> Result<()> {
        input_gradient(cx, enc, &self.io, |enc, dx| {
            self.pool.backward(cx.gpu, enc, dout, &self.argmax, dx)
        })
    }

    fn quantizers(&self) -> Vec<&Quantizer> {
        Vec::new()
    }
}

/// Average pooling over a square window, or over the whole map (global).
#[derive(Debug)]
pub(super) struct AvgPool {
    io: Io,
    pool: AvgPool2d,
}

impl AvgPool {
    pub(super) fn new(b: Build<'_>) -> Result<Self> {
        let [c, h, w] = b.spec.input;
        let pool = match b.spec.kind {
            LayerKind::AvgPool {
                kernel,
                stride,
                pad,
            } => AvgPool2d::new(
                b.gpu,
                &Pool2dShape::square(b.n, c, h, w, kernel, stride, pad),
            )?,
            _ => AvgPool2d::global(b.gpu, b.n, c, h, w)?,
        };
        Ok(Self { io: b.io(), pool })
    }
}

impl Layer for AvgPool {
    fn forward(&self, cx: &Context<'_>, enc: &mut Encoder) -> Result<()> {
        let (input, output) = (&cx.values[self.io.inputs[0]], &cx.values[self.io.output]);
        self.pool.forward(cx.gpu, enc, input, output)
    }

    fn backward(&self, cx: &mut Context<'_>, enc: &mut Encoder, dout: &Tensor) -> Result<()> {
        input_gradient(cx, enc, &self.io, |enc, dx| {
            self.pool.backward(cx.gpu, enc, dout, dx)
        })
    }

    fn quantizers(&self) -> Vec<&Quantizer> {
        Vec::new()
    }
}

/// Records a pooling backward, `write(enc, dx)`, which writes the whole input gradient: into
/// scratch, then added, when another reader of the input wrote that gradient first.
fn input_gradient(
    cx: &mut Context<'_>,
    enc: &mut Encoder,
    io: &Io,
    write: impl FnOnce(&mut Encoder, &Tensor) -> Result<()>,
) -> Result<()> {
    let first = io.inputs[0];
    let Some((dx, add)) = cx.target(first) else {
        return Ok(());
    };
    if !add {
        return write(enc, &dx);
    }
    let out = cx.sized(&cx.scratch.dy, cx.values[first].len())?;
    write(enc, &out)?;
    cx.add_into(enc, &out, &dx)
}
