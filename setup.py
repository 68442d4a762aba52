# All settings are in settings.ini; edit there, not here (nbdev 2 layout).
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
lic = licenses[cfg['license']]
requirements = cfg.get('pip_requirements', '').split() + cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
# optional extras, never needed by `make test`: the docs site (`make docs`) and inspect_ai logs (`cotfaith-export`)
extras = {k: cfg.get(f'{k}_requirements', '').split() for k in ('docs', 'inspect', 'slurm')}

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    license=lic[0], author=cfg['author'], author_email=cfg['author_email'], url=cfg['git_url'],
    keywords=cfg['keywords'].split(), packages=setuptools.find_packages(include=['cotfaith', 'cotfaith.*']),
    include_package_data=True, install_requires=requirements, extras_require={'dev': dev_requirements, **extras},
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    classifiers=['Development Status :: ' + statuses[int(cfg['status']) - 1], 'Intended Audience :: ' + cfg['audience'],
                 'License :: ' + lic[1], 'Natural Language :: ' + cfg['language'],
                 'Programming Language :: Python :: ' + cfg['min_python']],
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f"{cfg['lib_name']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
