import sys

from tgp.gpu_check import main

sys.exit(main())
