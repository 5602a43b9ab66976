"""What is computed from stored runs, without drawing it: TensorBoard's smoothing, reduction and bands (`series`),
ranking and factor effects over seeds (`effects`), plain-language findings (`findings`), and whether A is better
than B: what a study is judged on (`judges`), interactions (`interactions`), Holm's correction (`multiple`), seeds
and power (`power`), all of them at once (`statistics`) and two groups of runs (`groups`)."""
