"""Where each source file comes from and its published md5 (torchvision's tables).

MD5 is keyed by file name, or by the path inside an archive for extracted members; a file with
no entry is not verified (the Tiny-ImageNet members are covered by the archive's md5 only).
Fashion-MNIST entries are the md5s of the DECOMPRESSED IDX files, so re-gzipped copies (as in
Debian's dataset-fashion-mnist package) verify too. Tests point these tables at tiny archives.
"""

_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"

URLS = {
    "cifar-10-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-100-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "train_32x32.mat": _SVHN + "train_32x32.mat",
    "test_32x32.mat": _SVHN + "test_32x32.mat",
    "extra_32x32.mat": _SVHN + "extra_32x32.mat",
    "tiny-imagenet-200.zip": "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    "train-images-idx3-ubyte.gz": _FASHION + "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz": _FASHION + "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz": _FASHION + "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz": _FASHION + "t10k-labels-idx1-ubyte.gz",
}

MD5 = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
    "tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de",
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

# Directories searched (after root/<name>) for files that system packages install.
SYSTEM_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}
