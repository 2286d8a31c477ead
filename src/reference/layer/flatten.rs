//! Flatten: NCHW is already (C, H, W)-major per sample, so the data is unchanged.

use super::{Context, Gradients, Layer};

/// Passes values and gradients through.
#[derive(Debug)]
pub(super) struct Flatten;

impl Layer for Flatten {
    fn forward(&mut self, _: &mut Context<'_>, inputs: &[&[f32]]) -> Vec<f32> {
        inputs[0].to_vec()
    }

    fn backward(
        &self,
        _: &mut Gradients<'_>,
        _: &[&[f32]],
        _: &[f32],
        dout: Vec<f32>,
    ) -> Vec<Vec<f32>> {
        vec![dout]
    }
}
