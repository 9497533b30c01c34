"""The cache lifecycle: quota pruning, scrubbing, background work, status and the admin routes."""
