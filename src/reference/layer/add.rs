//! The residual add, its activation and its activation quantizer.

use super::{activation_backward, activation_forward, Context, Gradients, Layer, QuantUse};
use crate::spec::LayerSpec;

/// A residual add; keeps the quantizer applied to the (activated) sum.
#[derive(Debug)]
pub(super) struct ResidualAdd {
    spec: LayerSpec,
    quant: Option<QuantUse>,
}

impl ResidualAdd {
    pub(super) fn new(spec: LayerSpec) -> Self {
        Self { spec, quant: None }
    }
}

impl Layer for ResidualAdd {
    fn forward(&mut self, cx: &mut Context<'_>, inputs: &[&[f32]]) -> Vec<f32> {
        let sum: Vec<f32> = inputs[0]
            .iter()
            .zip(inputs[1])
            .map(|(a, b)| a + b)
            .collect();
        let a = activation_forward(self.spec.activation, sum);
        let (q, u) = cx.quantize_output(&self.spec, a);
        self.quant = Some(u);
        q
    }

    fn backward(
        &self,
        cx: &mut Gradients<'_>,
        _: &[&[f32]],
        _: &[f32],
        dout: Vec<f32>,
    ) -> Vec<Vec<f32>> {
        let q = self.quant.as_ref().expect("backward after forward");
        // The unsigned quantizer's backward carries the ReLU mask (see activation_backward).
        let da = q.backward(cx, &dout);
        let ds = activation_backward(self.spec.activation, true, &q.input, da);
        vec![ds.clone(), ds]
    }
}
