"""Box geometry and the CenterNet-style encoding shared by the trees detector's training and serving."""
