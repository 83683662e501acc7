"""The model and its maths: layers, MLP, loss, dropout, Adam, schedules, precision."""
