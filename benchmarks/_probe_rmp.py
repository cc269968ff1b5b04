import sys
import time
import warnings

import numpy as np

warnings.simplefilter("ignore")
import kalmandiff as kd
from kalmandiff.estimators._guided import prior_scale
from kalmandiff.testing import random_linear_gaussian_case as r

name = sys.argv[1]; cases = [int(s) for s in sys.argv[2].split(',')]
for spec in sys.argv[3:]:
    kw = eval(spec); out = []; t = time.perf_counter()
    for s in cases:
        c = r(s); pe = np.linalg.norm(c.prior_mean - c.mean); k = dict(kw)
        if k.pop('scaled', False):
            sc = prior_scale(c.prior); k.update(sigma_max=80*sc, sigma_min=0.002*sc, noise_floor=1e-3*sc)
        sol = getattr(kd, name)(c.prior, random_state=s, verbose=False, **k).fit(c.y, c.forward)
        out.append(np.linalg.norm(np.asarray(sol.reconstruct()) - c.mean)/pe)
    print(name, spec, ' '.join(f'{o:.3f}' for o in out), f'{time.perf_counter()-t:.1f}s', flush=True)
