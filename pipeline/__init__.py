"""The WFLW-V dataset pipeline library (knows nothing about DVC; the stages in ``stages/`` drive it)."""
