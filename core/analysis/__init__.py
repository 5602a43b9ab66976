"""What is computed from stored runs, without drawing it: TensorBoard's smoothing, reduction and bands (`series`),
ranking and factor effects over seeds (`effects`) and plain-language findings (`findings`)."""
