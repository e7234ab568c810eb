"""cptofs and cpfromfs."""
