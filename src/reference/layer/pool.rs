//! Max, average and global average pooling.

use super::{layers, Context, Gradients, Layer};
use crate::spec::{LayerKind, LayerSpec, Pool2dShape};

/// Max pooling, with the argmax its backward scatters through.
#[derive(Debug)]
pub(super) struct MaxPool {
    spec: LayerSpec,
    argmax: Vec<u32>,
}

impl MaxPool {
    pub(super) fn new(spec: LayerSpec) -> Self {
        Self {
            spec,
            argmax: Vec::new(),
        }
    }
}

impl Layer for MaxPool {
    fn forward(&mut self, cx: &mut Context<'_>, inputs: &[&[f32]]) -> Vec<f32> {
        let (y, argmax) = layers::maxpool2d_forward(&pool_shape(&self.spec, cx.n), inputs[0]);
        self.argmax = argmax;
        y
    }

    fn backward(
        &self,
        _: &mut Gradients<'_>,
        inputs: &[&[f32]],
        _: &[f32],
        dout: Vec<f32>,
    ) -> Vec<Vec<f32>> {
        vec![layers::maxpool2d_backward(
            inputs[0].len(),
            &self.argmax,
            &dout,
        )]
    }
}

/// Average pooling over a square window, or over the whole map (global).
#[derive(Debug)]
pub(super) struct AvgPool(pub(super) LayerSpec);

impl Layer for AvgPool {
    fn forward(&mut self, cx: &mut Context<'_>, inputs: &[&[f32]]) -> Vec<f32> {
        layers::avgpool2d_forward(&pool_shape(&self.0, cx.n), inputs[0])
    }

    fn backward(
        &self,
        cx: &mut Gradients<'_>,
        _: &[&[f32]],
        _: &[f32],
        dout: Vec<f32>,
    ) -> Vec<Vec<f32>> {
        vec![layers::avgpool2d_backward(
            &pool_shape(&self.0, cx.n),
            &dout,
        )]
    }
}

/// The pooling window of a pooling layer at batch size `n`.
fn pool_shape(l: &LayerSpec, n: usize) -> Pool2dShape {
    let [c, h, w] = l.input;
    match l.kind {
        LayerKind::MaxPool {
            kernel,
            stride,
            pad,
        }
        | LayerKind::AvgPool {
            kernel,
            stride,
            pad,
        } => Pool2dShape::square(n, c, h, w, kernel, stride, pad),
        _ => Pool2dShape::global(n, c, h, w),
    }
}
