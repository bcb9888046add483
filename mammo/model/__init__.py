"""The networks: Model 0-5 and pretrained backbones as data, one builder, the tf.data input."""
