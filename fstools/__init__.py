"""Front ends of the library kernel: lklfuse, fs2tar, cptofs and cpfromfs."""
