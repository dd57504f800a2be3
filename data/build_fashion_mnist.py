"""Build data/fashion_mnist.h5, the embedded default data set.

    python data/build_fashion_mnist.py [--source DIR] [--out PATH]

Reads the four IDX .gz files of Debian's dataset-fashion-mnist (`apt-get install
dataset-fashion-mnist` puts them in /usr/share/datasets/fashion-mnist), binarises them with the
fixed threshold (pixel >= 128), splits them 50k/10k/10k (the last 10,000 training images
validate), and writes them bit-packed with gzip level 9, labels included, in the layout of
dvae_cupy.data (write_hdf5: version 2, checksummed HDF5 metadata, Fletcher-32 on every dataset,
the content digest stored). It then reads the file back and checks it.

Verify: the script prints the sha256 of the unpacked pixels (train, valid, test rows in that
order, uint8 0/1, C order; `Splits.pixels_sha256`). Built from Debian's files it is
    dd935582f3737c9114704607c8218baa087eebbd3c818151ac56ec2ea62a93bb
and anyone can recompute it from the shipped file, or from the IDX files with the argument
'fashion-mnist-idx' (and root=DIR when they are elsewhere):
    python -c "from dvae_cupy.data import load_dataset; print(load_dataset().pixels_sha256())"
(tests/test_data.py also compares the shipped file with the IDX files pixel by pixel.)
"""
import argparse
import hashlib
from pathlib import Path

from dvae_cupy.data import FASHION_MNIST_DEBIAN, load_dataset, read_hdf5, write_hdf5


def parse_args():
    """--source: folder of the IDX files; --out: the HDF5 file to write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=FASHION_MNIST_DEBIAN,
                        help="folder with the four Fashion-MNIST IDX files (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fashion_mnist.h5"),
                        help="HDF5 file to write (default: %(default)s)")
    return parser.parse_args()


def file_sha256(path):
    """sha256 of the file's bytes (changes with the HDF5 library; the pixel checksum does not)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    args = parse_args()
    splits = load_dataset("fashion-mnist-idx", binarization="fixed", root=args.source)
    write_hdf5(args.out, splits, encoding="packbits", gzip_level=9)
    checksum = splits.pixels_sha256()
    if read_hdf5(args.out).pixels_sha256() != checksum:
        raise SystemExit(f"{args.out}: read back pixels differ from the ones written")
    sizes = ", ".join(f"{s} {len(splits.split(s))}" for s in ("train", "valid", "test"))
    print(f"wrote {args.out}: {sizes} images")
    print(f"pixels sha256 {checksum}")
    print(f"content digest {splits.content_digest()}")
    print(f"file size     {args.out.stat().st_size} bytes")
    print(f"file sha256   {file_sha256(args.out)}")


if __name__ == "__main__":
    main()
