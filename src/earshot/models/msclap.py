"""MS-CLAP (Elizalde et al., 2022/2023): placeholder, filled below."""
